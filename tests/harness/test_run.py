"""The harness end to end on the small embedded world: results, caching, resume after kill -9, failures."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from selbench.harness import runner
from selbench.harness.store import Store

REPO = Path(__file__).resolve().parents[2]
BENCH = ["emb_vqa", "emb_mc", "emb_pope", "emb_count", "emb_ocr"]


def _spec(tmp: Path, world: Path, selectors: list[dict], **extra) -> Path:
    spec = {
        "name": "t", "world": {"out": str(world), "seed": 3, "samples": 400, "bench_items": 40},
        "selectors": selectors, "budgets": [0.25], "seeds": [0],
        "finetune": {"method": "full", "lr": 5e-4, "projector_lr": None, "epochs": 1, "batch_size": 16},
        "benchmarks": BENCH, "evaluation": {"backend": "hf", "batch_size": 64, "max_new_tokens": 4},
        "executor": {"kind": "local", "max_parallel": 2, "threads_per_job": 1, **extra.pop("executor", {})},
        "store": str(tmp / "store"), **extra,
    }
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(autouse=True)
def _tests_importable(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.slow
def test_run_results_and_cached_rerun(tmp_path, small_world) -> None:
    spec = _spec(tmp_path, small_world, [{"name": "random"}, {"name": "length"}])
    first = runner.run(spec)
    assert {o.status for o in first.statuses.values()} == {"done"}
    res = first.results
    assert set(res["selector"]) == {"full", "random", "length"}
    prim = res[res["primary"]]
    assert len(prim) == 3 * len(BENCH)
    assert {"run", "spec_hash", "select_job", "finetune_job", "evaluate_job", "score_job"} <= set(res.columns)
    assert pd.read_parquet(first.out / "results.parquet").shape == res.shape
    # every artifact carries lineage, config, environment and timings
    store = Store(tmp_path / "store")
    meta = store.meta(first.plan.cells[0].jobs["finetune"])
    assert meta["deps"]["select"] == first.plan.cells[0].jobs["select"]
    assert meta["timings"]["wall_s"] > 0 and "device" in meta["timings"] and meta["environment"]["torch"]
    t0 = time.perf_counter()
    second = runner.run(spec)
    assert {o.status for o in second.statuses.values()} == {"cached"}
    assert time.perf_counter() - t0 < 30
    pd.testing.assert_frame_equal(second.results, res)


@pytest.mark.slow
def test_kill_dash_nine_then_resume(tmp_path, small_world) -> None:
    # the slow selector is listed first so its score job starts with the reference fine-tune
    spec = _spec(tmp_path, small_world, [
        {"name": "slow", "impl": "tests.harness.hostile:SlowSelector"}, {"name": "random"}])
    store = Store(tmp_path / "store")
    proc = subprocess.Popen([sys.executable, "-m", "selbench.cli", "run", str(spec)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # wait until a fine-tune and the slow selector's score job are both in flight, then kill -9 everything
    deadline = time.time() + 240
    while time.time() < deadline:
        tmps = [p.name for p in (store.root / "jobs").glob("*.tmp-*")] if (store.root / "jobs").exists() else []
        if any(n.startswith("finetune-") for n in tmps) and any(n.startswith("score-") for n in tmps):
            break
        time.sleep(0.1)
    else:
        pytest.fail("never saw a fine-tune and a score job in flight together")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: (p / "meta.json").stat().st_mtime_ns for p in (store.root / "jobs").iterdir()
              if (p / "meta.json").exists()}
    assert before, "some stages completed before the kill"
    result = runner.run(spec)
    assert all(o.status in ("done", "cached") for o in result.statuses.values())
    after = {p.name: (p / "meta.json").stat().st_mtime_ns for p in (store.root / "jobs").iterdir()
             if (p / "meta.json").exists()}
    assert all(after[k] == v for k, v in before.items()), "completed stages were recomputed"
    assert not list((store.root / "jobs").glob("*.tmp-*")), "stale staging folders removed"
    cached = [jid for jid, o in result.statuses.items() if o.status == "cached"]
    assert set(cached) == set(before)
    # the same results as a clean run of the same spec in a fresh store
    clean = runner.run(_spec(tmp_path / "clean", small_world, [
        {"name": "slow", "impl": "tests.harness.hostile:SlowSelector"}, {"name": "random"}]))
    cols = ["selector", "budget", "seed", "benchmark", "metric", "value"]
    pd.testing.assert_frame_equal(result.results[cols], clean.results[cols])


@pytest.mark.slow
def test_failing_hanging_and_oom_cells_end_with_reasons(tmp_path, small_world) -> None:
    executor = {"timeout_s": {"score": 20, "finetune": 600, "evaluate": 600, "prepare": 120}, "memory_limit_mb": 6000}
    spec = _spec(tmp_path, small_world, [
        {"name": "random"},
        {"name": "crash", "impl": "tests.harness.hostile:CrashSelector"},
        {"name": "hang", "impl": "tests.harness.hostile:HangSelector"},
    ], executor=executor)
    result = runner.run(spec)
    board = result.board.set_index("selector")
    assert board.loc["random", "status"] == "done" and board.loc["full", "status"] == "done"
    assert "selector exploded on purpose" in board.loc["crash", "reason"]
    assert "timed out after 20s" in board.loc["hang", "reason"]
    assert all(board.loc[s, "status"] == "failed" for s in ("crash", "hang"))
    # a selector that never finished has no selection time and no OSC (N/A), not 0 s
    assert all(pd.isna(board.loc[s, "selection_s"]) and pd.isna(board.loc[s, "osc_v1"]) for s in ("crash", "hang"))
    # The memory-hungry selector runs on the same store with a score timeout it cannot reach: beside the hang's 20 s,
    # its cold start (a memory limit forgoes the warm worker) and gigabytes of pages outlasted the timeout once, on a
    # machine shared with another test worker, and it was reported as timed out instead of out of memory.
    executor["timeout_s"]["score"] = 300
    board = runner.run(_spec(tmp_path, small_world, [
        {"name": "random"}, {"name": "memory", "impl": "tests.harness.hostile:MemorySelector"},
    ], executor=executor)).board.set_index("selector")
    assert board.loc["memory", "status"] == "failed" and "out of memory" in board.loc["memory", "reason"]
    assert pd.isna(board.loc["memory", "selection_s"]) and board.loc["random", "status"] == "done"


@pytest.mark.slow
def test_two_process_fine_tunes_in_a_run(tmp_path, small_world) -> None:
    """executor.finetune_processes: 2 — every fine-tune job (the cell's and the reference) trains as two gloo
    processes under accelerate launch; the cell completes, its meta and train log say so, and its subset model
    equals the one-process run's to float rounding (same schedule, same global batches)."""
    from safetensors.torch import load_file

    runs = {}
    for n in (1, 2):
        # with device ids (ignored by torch on CPU) the scheduler hands each fine-tune two of them, other GPU stages one
        executor = {"finetune_processes": 2, "gpus": [0, 1, 2]} if n == 2 else {}
        spec = _spec(tmp_path / f"p{n}", small_world, [{"name": "random"}], executor=executor)
        runs[n] = runner.run(spec)
        assert {o.status for o in runs[n].statuses.values()} == {"done"}, runs[n].statuses
    store = Store(tmp_path / "p2" / "store")
    cell = next(c for c in runs[2].plan.cells if c.selector != "full")
    meta = store.meta(cell.jobs["finetune"])
    assert meta["processes"] == 2 and meta["timings"]["peak_rss_mb"] > 0
    log = store.log_path(cell.jobs["finetune"]).read_text()
    assert "selbench-train-rank 1/2" in log
    assert re.search(r"CUDA_VISIBLE_DEVICES=[012],[012]\n", log), log[:500]
    assert re.search(r"CUDA_VISIBLE_DEVICES=[012]\n", store.log_path(cell.jobs["evaluate"]).read_text())
    assert "CUDA_VISIBLE_DEVICES=\n" in store.log_path(cell.jobs["select"]).read_text()  # CPU stage: none
    assert not (store.path(cell.jobs["finetune"]) / "launch" / "trained_state.pt").exists()  # export only
    def subset_model(n: int) -> dict:
        cell_n = next(c for c in runs[n].plan.cells if c.selector != "full")
        folder = Store(tmp_path / f"p{n}" / "store").path(cell_n.jobs["finetune"]) / "model"
        return load_file(next(folder.glob("*.safetensors")))

    one, two = subset_model(1), subset_model(2)
    assert sorted(one) == sorted(two)
    diff = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert diff < 1e-4, diff
