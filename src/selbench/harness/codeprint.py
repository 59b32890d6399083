"""Code identity of a job: a fingerprint of the Python source its stage runs, so changed code never reuses a stale
result and unchanged code always does (``Job.code``, part of the job key).

What is hashed (sha256 of file *contents*, never mtimes, listed by their paths relative to the package root, i.e.
``selbench/harness/store.py``, so the same code installed elsewhere has the same fingerprint):

- every job: the stage's module (``selbench.harness.stages.<stage>``), the job entrypoint (``selbench.harness.job``)
  and what the stage starts by name (the training worker), with the transitive closure of the ``selbench`` modules
  they import and the packages that contain them (their ``__init__.py`` runs too); the evaluate stage also hashes
  the embedded benchmarks' lmms-eval task files (``evaluators/lmms_tasks``: YAML and utils);
- score and select jobs: also the selector's code — the module of its class (a registry entry point or an
  ``impl: module:Class``) and the closure of the modules it imports within its own top-level package and within
  ``selbench``.

Imports are found by parsing the source (``ast``): ``import`` and ``from … import`` statements anywhere in a module,
inside functions included (lazy imports still run), relative ones resolved against the module's package; those
under ``if TYPE_CHECKING:`` are skipped (they never run). Modules are located with ``importlib`` finders without
importing them (``find_spec`` of a top-level name; the parent's search path for a submodule).

What is not hashed:

- third-party libraries (torch, transformers, …): their versions are recorded in each job's environment
  (``meta.json``), not in its identity;
- modules named only by strings and imported dynamically (``importlib.import_module``; the registry's ``module:Class``
  paths): the selector a job runs is added explicitly instead;
- a selector that lives in a container image: its code is the image reference as the spec gives it (in the job
  config, ``image``) — a tag that is re-pushed with other code is not noticed unless the reference pins a digest.

Fingerprints are cached per process: a plan reads each file once. ``clear_cache()`` forgets them (tests that edit
source files between plans).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import pkgutil
from functools import cache
from importlib.machinery import ModuleSpec
from pathlib import Path

from selbench.harness.stages import STAGES

HOME = "selbench"  # the harness's own package: always followed
_SELECTOR_STAGES = frozenset({"score", "select"})


_found: dict[str, ModuleSpec] = {}  # modules located so far (a miss is not kept: sys.path may grow, e.g. submissions)


def _spec(name: str) -> ModuleSpec | None:
    """Where module ``name`` lives, found without importing it (a top-level name's finder, or the parent package's
    search path for a submodule). None when there is no such module."""
    if name in _found:
        return _found[name]
    parent = name.rpartition(".")[0]
    try:
        if not parent:
            spec = importlib.util.find_spec(name)
        else:
            up = _spec(parent)
            if up is None or up.submodule_search_locations is None:
                return None  # the parent is a plain module: ``name`` is an attribute of it, not a module
            spec = _find_in(name, list(up.submodule_search_locations))
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without a __spec__
        return None
    if spec is not None:
        _found[name] = spec
    return spec


def _find_in(name: str, locations: list[str]) -> ModuleSpec | None:
    """Submodule ``name`` in its parent's search path (what ``PathFinder`` does, minus the parent lookup in
    ``sys.modules`` it makes for a namespace package: the parent need not be imported)."""
    portions: list[str] = []
    for loc in locations:
        finder = pkgutil.get_importer(loc)
        spec = finder.find_spec(name) if finder is not None and hasattr(finder, "find_spec") else None
        if spec is None:
            continue
        if spec.loader is not None:
            return spec
        portions += list(spec.submodule_search_locations or [])  # a namespace package's portion: keep looking
    if not portions:
        return None
    namespace = ModuleSpec(name, None, is_package=True)
    namespace.submodule_search_locations = portions
    return namespace


def _source(spec: ModuleSpec) -> Path | None:
    return Path(spec.origin) if spec.has_location and spec.origin and Path(spec.origin).is_file() else None


def _is_package(spec: ModuleSpec) -> bool:
    return spec.submodule_search_locations is not None


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Every module name ``source`` (the text of module ``module``) may import: for ``from X import y`` both ``X``
    and ``X.y`` (y may be a submodule); relative imports made absolute."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node.test):
            for stmt in node.orelse:
                visit(stmt)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts):
                    return  # beyond the top-level package: would fail at run time too
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                target = ".".join(p for p in (base, node.module) if p)
            else:
                target = node.module or ""
            if target:
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@cache
def closure(module: str, within: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``module`` and every module it imports, transitively, whose top-level package is in ``within`` (plus the
    packages containing them): sorted ``(path relative to the package root, sha256 of the file)`` pairs."""
    allowed = set(within)
    files: dict[str, str] = {}
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name.partition(".")[0] not in allowed:
            continue
        seen.add(name)
        spec = _spec(name)
        if spec is None:
            continue  # not a module (an attribute in ``from X import y``), or one that is not installed
        todo += _parents(name)
        path = _source(spec)
        if path is None:
            continue  # a namespace package: no file of its own
        data = path.read_bytes()
        root = path.parents[len(name.split(".")) - (0 if path.stem == "__init__" else 1)]
        files[path.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
        if path.suffix == ".py":
            todo += imported_names(data.decode("utf-8", errors="replace"), name, _is_package(spec))
    return tuple(sorted(files.items()))


def _digest(files: tuple[tuple[str, str], ...]) -> str:
    h = hashlib.sha256()
    for rel, sha in files:
        h.update(f"{rel}\0{sha}\n".encode())
    return h.hexdigest()


# What a stage runs that no import statement names, so the closure cannot find it: the job entrypoint (every stage;
# it picks the stage module by a string), the training worker (``accelerate launch`` starts it by name) and the
# embedded benchmarks' lmms-eval tasks (YAML and utils that lmms-eval loads from their folder).
RUN_BY_NAME: dict[str, tuple[str, ...]] = {"finetune": ("selbench.models.train_worker",)}
ENTRYPOINT = "selbench.harness.job"
DATA_FOLDERS: dict[str, tuple[str, ...]] = {"evaluate": ("evaluators/lmms_tasks",)}


def _data_files(folder: str) -> tuple[tuple[str, str], ...]:
    spec = _spec(HOME)
    if spec is None or spec.origin is None:
        return ()
    package = Path(spec.origin).parent
    root = package / folder
    return tuple(sorted((p.relative_to(package.parent).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
                        for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts))


@cache
def stage_fingerprint(stage: str) -> str:
    """The harness's code for ``stage``: its module, the job entrypoint, what the stage starts by name, and the
    ``selbench`` modules all of them import; plus the stage's data files (``DATA_FOLDERS``)."""
    files: dict[str, str] = {}
    for module in (STAGES[stage].partition(":")[0], ENTRYPOINT, *RUN_BY_NAME.get(stage, ())):
        files.update(closure(module, (HOME,)))
    for folder in DATA_FOLDERS.get(stage, ()):
        files.update(_data_files(folder))
    return _digest(tuple(sorted(files.items())))


@cache
def selector_fingerprint(path: str) -> str:
    """A selector's code, from its ``module:Class`` path: its module and what it imports within its own top-level
    package and within ``selbench``."""
    module = path.partition(":")[0]
    top = module.partition(".")[0]
    if _spec(module) is None:
        raise ValueError(f"selector {path!r}: module {module!r} not found")
    return _digest(closure(module, tuple(sorted({top, HOME}))))


def job_code(stage: str, selector: str | None = None) -> str:
    """``Job.code`` of a job of ``stage``; ``selector`` (``module:Class``) for the score and select jobs of an
    importable selector (None for the full-data reference and for a selector in an image)."""
    parts = {"stage": stage_fingerprint(stage)}
    if selector is not None and stage in _SELECTOR_STAGES:
        parts["selector"] = selector_fingerprint(selector)
    h = hashlib.sha256()
    for k, v in sorted(parts.items()):
        h.update(f"{k}={v}\n".encode())
    return h.hexdigest()


def clear_cache() -> None:
    _found.clear()
    importlib.invalidate_caches()  # the finders' directory listings too: files may have come and gone
    for fn in (closure, stage_fingerprint, selector_fingerprint):
        fn.cache_clear()
