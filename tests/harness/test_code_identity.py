"""Job identity includes code (issue #15): a job's key holds a fingerprint of the source it runs (``Job.code``), so
changed selector or stage code gets new job ids — its jobs and everything downstream are re-run on the same store —
and unchanged code keeps them (reused). Planning only: nothing runs."""

from __future__ import annotations

import os
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from selbench.harness import codeprint
from selbench.harness.plan import Plan, build_plan
from selbench.harness.spec import RunSpec
from selbench.harness.store import Job, Store

SELECTOR = '''
from typing import ClassVar

import numpy as np
from pydantic import BaseModel

from selbench.selectors.base import check_selection

from . import helper
import {other}


class Cfg(BaseModel):
    pass


class MySelector:
    name: ClassVar[str] = "mine"
    Config: ClassVar[type[BaseModel]] = Cfg
    needs: ClassVar[frozenset[str]] = frozenset()
    WEIGHT = 1.0

    def __init__(self, config):
        self.config = config

    def score(self, pool, ctx):
        return {{"s": np.arange(len(pool)) * self.WEIGHT + helper.OFFSET}}

    def select(self, artifacts, budget, seed):
        return check_selection(np.argsort(-artifacts["s"])[:budget], budget, len(artifacts["s"]), self.name)
'''


@pytest.fixture(autouse=True)
def fresh_fingerprints():
    """Fingerprints are cached per process: forget them around each test (these tests edit source files)."""
    codeprint.clear_cache()
    yield
    codeprint.clear_cache()


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder on sys.path for throwaway modules (unique names; removed from sys.modules afterwards)."""
    root = tmp_path / "src"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def selector_package(root: Path) -> tuple[str, str]:
    """A selector package ``<pkg>`` (``core`` holds the class and imports ``helper`` relatively) and a top-level
    module ``<other>`` it imports, standing in for a third-party library. Returns (pkg, other)."""
    tag = uuid.uuid4().hex[:8]
    pkg, other = f"codeid_sel_{tag}", f"codeid_lib_{tag}"
    write(root / pkg / "__init__.py", "")
    write(root / pkg / "core.py", SELECTOR.format(other=other))
    write(root / pkg / "helper.py", "OFFSET = 0.0\n")
    write(root / f"{other}.py", "VERSION = 1\n")
    return pkg, other


def spec(tmp_path: Path, selectors: list[dict]) -> RunSpec:
    """A spec on a fake pool and models (written once: the pool file's mtime is part of the prepare job's key)."""
    if not (tmp_path / "pool.json").exists():
        write(tmp_path / "pool.json", '[{"id": "a", "conversations": [{"from": "human", "value": "hi"}, '
                                      '{"from": "gpt", "value": "yes"}]}]')
        for model in ("target", "proxy"):
            write(tmp_path / model / "config.json", f'{{"model_type": "llava", "name": "{model}"}}')
    return RunSpec.model_validate({
        "name": "code-identity", "pool": {"path": str(tmp_path / "pool.json")}, "target": str(tmp_path / "target"),
        "proxy": str(tmp_path / "proxy"),
        "selectors": selectors, "budgets": [0.25, 0.5], "seeds": [0], "benchmarks": ["emb_vqa"],
        "evaluation": {"backend": "hf"}, "store": str(tmp_path / "store")})


def plan_ids(plan: Plan) -> dict[str, dict[str, str]]:
    """Each cell's jobs, by ``selector|budget``."""
    return {f"{c.selector}|{c.budget}": dict(c.jobs) for c in [plan.reference, *plan.cells]}


def replan(s: RunSpec) -> dict[str, dict[str, str]]:
    codeprint.clear_cache()  # what a new process (tonight's run) would see
    return plan_ids(build_plan(s))


def test_changed_selector_source_moves_its_jobs_and_nothing_else(tmp_path: Path, modules: Path) -> None:
    pkg, other = selector_package(modules)
    s = spec(tmp_path, [{"name": "mine", "impl": f"{pkg}.core:MySelector"}, {"name": "random"}])
    before = replan(s)
    mine = {cell for cell in before if cell.startswith("mine|")}
    assert len(mine) == 2

    assert replan(s) == before  # unchanged source: the same ids, so a second run on the store reuses every job
    for f in (modules / pkg).glob("*.py"):
        os.utime(f, (1_000_000_000, 1_000_000_000))
    assert replan(s) == before  # contents are hashed, not mtimes

    def moved(after: dict[str, dict[str, str]]) -> None:
        for cell, jobs in after.items():
            stages = {stage for stage in jobs if jobs[stage] != before[cell][stage]}
            if cell in mine:  # this selector's jobs, and everything downstream of them
                assert stages == {"score", "select", "finetune", "evaluate"}, cell
            else:  # prepare, the full-data reference and the other selector keep theirs: reused tonight
                assert not stages, cell

    core = modules / pkg / "core.py"
    core.write_text(core.read_text().replace("WEIGHT = 1.0", "WEIGHT = 2.0"))
    after = replan(s)
    moved(after)

    helper = modules / pkg / "helper.py"  # a module the selector imports within its own package counts too
    helper.write_text("OFFSET = 0.5\n")
    moved(replan(s))
    assert all(replan(s)[c]["score"] != after[c]["score"] for c in mine)

    before = replan(s)
    (modules / f"{other}.py").write_text("VERSION = 2\n")  # outside its package and selbench: third-party
    assert replan(s) == before


def test_job_code_is_stage_code_plus_selector_code(tmp_path: Path, modules: Path) -> None:
    pkg, _ = selector_package(modules)
    plan = build_plan(spec(tmp_path, [{"name": "mine", "impl": f"{pkg}.core:MySelector"}]))
    by_stage: dict[str, set[str]] = {}
    for job in plan.jobs:
        by_stage.setdefault(job.stage, set()).add(job.code)
    assert all(len(codes) == 1 for stage, codes in by_stage.items() if stage != "select")
    assert by_stage["prepare"] == {codeprint.job_code("prepare")}
    assert by_stage["score"] == {codeprint.job_code("score", f"{pkg}.core:MySelector")}
    # the selector's select jobs carry its code; the full-data reference's select job runs no selector
    assert by_stage["select"] == {codeprint.job_code("select", f"{pkg}.core:MySelector"), codeprint.job_code("select")}
    assert len({c for codes in by_stage.values() for c in codes}) == 6  # every stage's code differs
    files = dict(codeprint.closure(f"{pkg}.core", (pkg, "selbench")))
    assert {f"{pkg}/__init__.py", f"{pkg}/core.py", f"{pkg}/helper.py", "selbench/selectors/base.py"} <= set(files)


def test_changed_stage_code_moves_that_stage_and_downstream(tmp_path: Path, monkeypatch) -> None:
    s = spec(tmp_path, [{"name": "random"}])
    before = plan_ids(build_plan(s))
    real = codeprint.stage_fingerprint
    monkeypatch.setattr(codeprint, "stage_fingerprint", lambda st: "edited" if st == "finetune" else real(st))
    after = plan_ids(build_plan(s))
    for cell in before:
        stages = {st for st in before[cell] if before[cell][st] != after[cell][st]}
        assert stages == {"finetune", "evaluate"}, cell


def test_stage_fingerprint_covers_the_harness_modules_a_stage_imports() -> None:
    files = {rel for rel, _ in codeprint.closure("selbench.harness.stages.score", ("selbench",))}
    assert {"selbench/harness/stages/score.py", "selbench/harness/stages/__init__.py", "selbench/__init__.py",
            "selbench/harness/store.py", "selbench/selectors/registry.py"} <= files
    assert "selbench/cli.py" not in files and "selbench/reports/__init__.py" not in files
    assert not any(rel.startswith(("numpy/", "torch/")) for rel in files)  # third-party code is not hashed
    assert all(len(sha) == 64 for _, sha in codeprint.closure("selbench.harness.stages.score", ("selbench",)))


def test_closure_follows_transitive_relative_and_lazy_imports(modules: Path) -> None:
    pkg = f"codeid_pkg_{uuid.uuid4().hex[:8]}"
    write(modules / pkg / "__init__.py", "")
    write(modules / pkg / "a.py", """
        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            from . import typing_only

        def run():
            from . import b  # lazy and relative
            return b.VALUE
        """)
    write(modules / pkg / "b.py", f"import {pkg}.sub.c\nVALUE = 1\n")
    write(modules / pkg / "ns" / "d.py", "from .. import b\n")  # in a namespace package (no __init__.py)
    write(modules / pkg / "sub" / "__init__.py", "")
    write(modules / pkg / "sub" / "c.py", f"from ..b import VALUE\nfrom {pkg}.ns import d\n")  # b again: once
    write(modules / pkg / "typing_only.py", "X = 1\n")
    write(modules / pkg / "unused.py", "X = 1\n")

    def fingerprint() -> str:
        codeprint.clear_cache()
        return codeprint.selector_fingerprint(f"{pkg}.a:Nothing")

    files = {rel for rel, _ in codeprint.closure(f"{pkg}.a", (pkg,))}
    assert files == {f"{pkg}/{f}" for f in ("__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/c.py", "ns/d.py")}
    assert pkg not in sys.modules  # found without importing anything
    first = fingerprint()
    assert fingerprint() == first
    (modules / pkg / "b.py").write_text(f"import {pkg}.sub.c\nVALUE = 2\n")  # a's import, not a itself
    second = fingerprint()
    assert second != first
    (modules / pkg / "ns" / "d.py").write_text("from .. import b as B\n")  # three imports away
    assert fingerprint() != second
    third = fingerprint()
    for name in ("typing_only.py", "unused.py"):  # never imported when a runs: not its code
        (modules / pkg / name).write_text("X = 2\n")
    assert fingerprint() == third


def test_image_selector_is_identified_by_its_reference(tmp_path: Path) -> None:
    def score(image: str) -> Job:
        plan = build_plan(spec(tmp_path, [{"name": "sub", "image": image}]))
        return next(j for j in plan.jobs if j.stage == "score")

    job = score("registry.example/sub:v1")
    assert job.config["image"] == "registry.example/sub:v1" and job.code == codeprint.job_code("score")
    assert score("registry.example/sub:v2").id != job.id
    assert score("registry.example/sub:v1").id == job.id


def test_code_travels_with_the_stored_job(tmp_path: Path) -> None:
    plan = build_plan(spec(tmp_path, [{"name": "random"}]))
    store = Store(tmp_path / "store")
    for job in plan.jobs:
        store.write_job(job)
        back = store.read_job(job.id)
        assert back.code == job.code and back.id == job.id
    job = plan.jobs[0]
    assert Job(job.stage, job.config, job.deps, job.cell, code="other").id != job.id


def test_stages_hash_what_they_start_by_name(monkeypatch) -> None:
    """The job entrypoint (every stage), the training worker (fine-tune) and the embedded lmms-eval task files
    (evaluate) are run by name, not imported: each is part of its stage's fingerprint."""
    from selbench.harness import codeprint as cp

    stages = ("prepare", "finetune", "evaluate")
    cp.clear_cache()
    full = {s: cp.stage_fingerprint(s) for s in stages}
    monkeypatch.setattr(cp, "DATA_FOLDERS", {})
    monkeypatch.setattr(cp, "RUN_BY_NAME", {})
    monkeypatch.setattr(cp, "ENTRYPOINT", "selbench.harness.stages.prepare")
    cp.clear_cache()
    bare = {s: cp.stage_fingerprint(s) for s in stages}
    cp.clear_cache()
    assert all(full[s] != bare[s] for s in stages), (full, bare)
    assert any(rel.endswith("lmms_tasks/utils.py") for rel, _ in cp._data_files("evaluators/lmms_tasks"))
