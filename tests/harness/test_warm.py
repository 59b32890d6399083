"""The local executor's warm worker (selbench.harness.executors.warm): jobs forked from one process that imported
torch / transformers / lmms-eval once. A forked job must behave as a fresh interpreter would: the same results bit
for bit, its own log, its failures and timeouts reported the same way, and nothing left running afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from tests.harness.processes import job_processes

from selbench.harness import runner
from selbench.harness.spec import load_spec
from selbench.harness.store import Store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _tests_importable(monkeypatch):  # the hostile selectors are imported by the jobs (and the warm worker)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def _spec(root: Path, world: Path, selectors: list[dict], **executor) -> Path:
    import yaml

    spec = {"name": "warm", "world": {"out": str(world), "seed": 3, "samples": 400, "bench_items": 40},
            "selectors": selectors, "budgets": [0.25], "seeds": [0],
            "finetune": {"method": "full", "lr": 1e-3, "projector_lr": None, "epochs": 1, "batch_size": 16},
            "benchmarks": ["emb_vqa", "emb_count"], "evaluation": {"backend": "hf", "batch_size": 40},
            "executor": {"max_parallel": 2, "threads_per_job": 1, **executor}, "store": str(root / "store")}
    root.mkdir(parents=True, exist_ok=True)
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    return root / "spec.yaml"


@pytest.mark.slow
def test_warm_jobs_fail_time_out_and_match_a_cold_run(tmp_path: Path, small_world: Path) -> None:
    said: list[str] = []
    warm = runner.run(_spec(tmp_path / "warm", small_world, [
        {"name": "random"},
        {"name": "crash", "impl": "tests.harness.hostile:CrashSelector"},
        {"name": "hang", "impl": "tests.harness.hostile:HangSelector"},
    ], timeout_s={"score": 8, "finetune": 600, "evaluate": 600, "prepare": 120}), on_message=said.append)
    assert not [m for m in said if "warm worker" in m], said  # every job was forked: no fallback to cold
    store = Store(tmp_path / "warm" / "store")
    assert load_spec(tmp_path / "warm" / "spec.yaml").executor.warm_workers  # the default
    board = warm.board.set_index("selector")
    assert board.loc["random", "status"] == "done" and board.loc["full", "status"] == "done"
    assert "selector exploded on purpose" in board.loc["crash", "reason"]  # the traceback reached the job's log
    assert "timed out after 8s" in board.loc["hang", "reason"]
    assert store.log_path("warm-worker").exists()  # the jobs were forked, not started cold
    assert "=== " in store.log_path(warm.plan.cells[0].jobs["select"]).read_text()
    assert not job_processes(store.root), "a job process or the warm worker outlived the run"

    cold = runner.run(_spec(tmp_path / "cold", small_world, [{"name": "random"}], warm_workers=False))
    assert not Store(tmp_path / "cold" / "store").log_path("warm-worker").exists()
    cols = ["selector", "budget", "seed", "benchmark", "metric", "value"]
    pick = lambda r: r.results[r.results["selector"].isin(["random", "full"])][cols].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(pick(warm), pick(cold))  # bit for bit: same code, same threads, same seeds
