"""Fixed inputs for planning the demo spec without building its world: the job ids of the demo plan depend only on
the spec, these files (content, size, mtime) and their absolute paths, so they are the same on every machine — and on
the code each job runs (``Job.code``), which ``demo_plan_ids`` holds at a neutral value so that editing the source
does not move the golden ids (tests/harness/test_code_identity.py checks that code moves ids)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = Path("/tmp/selbench-plan-ids-v1")  # absolute paths are part of job configs: fixed, not a tmp_path
MTIME = 1_700_000_000


def demo_spec_path() -> Path:
    """The demo spec, with a fake world (a pool file and two model configs) under ``BASE``."""
    world = BASE / "out" / "world"
    files = {world / "pool" / "pool.json": json.dumps([{"id": "a", "conversations": [
                 {"from": "human", "value": "hi"}, {"from": "gpt", "value": "yes"}]}]),
             world / "models" / "target" / "config.json": json.dumps({"model_type": "llava", "n": 1}),
             world / "models" / "proxy" / "config.json": json.dumps({"model_type": "llava", "n": 2})}
    for path, text in files.items():
        _put(path, text, MTIME)
    out = BASE / "demo.yaml"
    _put(out, yaml.safe_dump(yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())))
    return out


def _put(path: Path, text: str, mtime: int | None = None) -> None:
    """Write ``path`` whole or not at all (a temporary file, its mtime, then a rename): under `make test` another
    worker may be planning from the same files at the same moment, and must never see one half-written or with the
    wrong mtime."""
    if path.exists() and path.read_text() == text and (mtime is None or path.stat().st_mtime == mtime):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


def neutral_code(stage: str, selector: str | None = None) -> str:
    """Stands in for ``codeprint.job_code``: the same code fingerprint for every job, whatever the source says."""
    return ""


def demo_plan_ids() -> dict[str, list[str]]:
    """Every job id of the demo plan by stage, plus each cell's jobs, with a neutral code fingerprint."""
    from selbench.harness import codeprint
    from selbench.harness.plan import build_plan
    from selbench.harness.spec import load_spec

    with mock.patch.object(codeprint, "job_code", neutral_code):
        plan = build_plan(load_spec(demo_spec_path()).resolved(BASE))
    ids: dict[str, list[str]] = {}
    for job in plan.jobs:
        ids.setdefault(job.stage, []).append(job.id)
    cells = {f"{c.selector}|{c.budget}|{c.seed}": [c.jobs[s] for s in sorted(c.jobs)]
             for c in [plan.reference, *plan.cells]}
    return {"stages": {k: sorted(v) for k, v in sorted(ids.items())}, "cells": cells}  # type: ignore[dict-item]


if __name__ == "__main__":  # writes the golden file (only when job ids are meant to change: say why in the commit)
    (Path(__file__).parent / "golden" / "demo_plan_ids.json").write_text(json.dumps(demo_plan_ids(), indent=1))
