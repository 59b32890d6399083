"""The import graph of src/selbench goes one way: pool → models → selectors / evaluators → leaderboard → harness →
reports → cli. Every import counts, including the ones inside functions (lazy imports are still dependencies)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "selbench"

# Lower number = lower layer. A module may import its own layer's package and any lower layer, never a higher
# one; sibling packages on one layer (selectors, evaluators, embedded) stay independent of each other.
LAYERS: dict[str, int] = {
    "selbench": 0, "selbench.progress": 0,
    "selbench.pool": 1,
    "selbench.models": 2,
    "selbench.selectors": 3, "selbench.evaluators": 3, "selbench.embedded": 3,
    "selbench.leaderboard": 4,
    "selbench.harness": 5,
    "selbench.reports": 6,
    "selbench.cli": 7,
}


def unit(module: str) -> str:
    """The layer unit a module belongs to: its top-level package or module under selbench."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else "selbench"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m == "selbench" or m.startswith("selbench.")]


def violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        src = unit(module_name(path))
        assert src in LAYERS, f"{path}: {src} has no layer; add it to LAYERS"
        for line, target in imports(path):
            dst = unit(target)
            assert dst in LAYERS, f"{path}:{line}: imports {target}, which has no layer"
            upward = LAYERS[dst] > LAYERS[src]
            sibling = LAYERS[dst] == LAYERS[src] and dst != src and src != "selbench" and dst != "selbench"
            if upward or sibling:
                bad.append(f"{path.relative_to(SRC.parent)}:{line}: {src} (layer {LAYERS[src]}) imports {target} "
                           f"(layer {LAYERS[dst]})")
    return bad


def test_no_import_runs_up_a_layer() -> None:
    assert violations() == []


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    # the rule itself, on a fabricated edge: models importing selectors is upward
    assert LAYERS[unit("selbench.selectors._features")] > LAYERS[unit("selbench.models.train_worker")]
    assert unit("selbench.harness.stages.select") == "selbench.harness" and unit("selbench") == "selbench"
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from selbench.reports import build_report\n")
    assert imports(f) == [(2, "selbench.reports")]
