"""The Ray executor against a real Ray cluster on 127.0.0.1 (``ray start --head``, one declared GPU so the
GPU-stage scheduling is exercised): cells complete, a crashing and a hanging selector end their own cells, GPU
stages get CUDA_VISIBLE_DEVICES from Ray and CPU stages none, and the results equal the local executor's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from selbench.harness import runner
from selbench.harness.store import Store

REPO = Path(__file__).resolve().parents[2]
BENCH = ["emb_vqa", "emb_mc", "emb_pope", "emb_count", "emb_ocr"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(monkeypatch):
    ray_bin = Path(sys.executable).parent / "ray"
    tmp = Path(tempfile.mkdtemp(prefix="sbray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    home = tmp / "home"  # ray.init may leave ~/.ray/auth_token behind (ENV-NOTES): keep it out of the real HOME
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for k in ("HOME", "RAY_USAGE_STATS_ENABLED", "PYTHONPATH"):
        monkeypatch.setenv(k, env[k])
    port = _free_port()
    subprocess.run([str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                    "--num-cpus=2", "--num-gpus=1", f"--temp-dir={tmp / 'ray'}", "--include-dashboard=false",
                    "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


HOSTILE = [{"name": "crash", "impl": "tests.harness.hostile:CrashSelector"},
           {"name": "hang", "impl": "tests.harness.hostile:HangSelector"}]


def _spec(tmp: Path, world: Path, executor: dict, hostile: bool = True) -> Path:
    spec = {
        "name": "t", "world": {"out": str(world), "seed": 3, "samples": 400, "bench_items": 40},
        "selectors": [{"name": "random"}, *(HOSTILE if hostile else [])],
        "budgets": [0.25], "seeds": [0],
        "finetune": {"method": "full", "lr": 5e-4, "projector_lr": None, "epochs": 1, "batch_size": 16},
        "benchmarks": BENCH, "evaluation": {"backend": "hf", "batch_size": 64, "max_new_tokens": 4},
        "executor": {"max_parallel": 2, "threads_per_job": 1, "timeout_s": {"score": 20}, **executor},
        "store": str(tmp / "store"),
    }
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    return tmp / "spec.yaml"


@pytest.mark.slow
@pytest.mark.ray
def test_ray_executor_on_a_local_cluster(tmp_path, small_world, ray_cluster) -> None:
    res = runner.run(_spec(tmp_path / "ray", small_world, {"kind": "ray", "ray_address": ray_cluster}))
    board = res.board.set_index("selector")
    assert board.loc["full", "status"] == "done" and board.loc["random", "status"] == "done"
    assert board.loc["crash", "status"] == "failed" and "selector exploded on purpose" in board.loc["crash", "reason"]
    assert board.loc["hang", "status"] == "failed" and "timed out after 20s" in board.loc["hang", "reason"]

    store = Store(tmp_path / "ray" / "store")
    cell = next(c for c in res.plan.cells if c.selector == "random")
    assert "CUDA_VISIBLE_DEVICES=0" in store.log_path(cell.jobs["finetune"]).read_text()  # Ray's GPU grant
    assert "CUDA_VISIBLE_DEVICES=\n" in store.log_path(cell.jobs["select"]).read_text()  # CPU stage: none

    # the same jobs under the local executor give the same numbers (deterministic CPU training)
    local = runner.run(_spec(tmp_path / "local", small_world, {"kind": "local"}, hostile=False))
    cols = ["selector", "budget", "seed", "benchmark", "metric", "value"]
    pd.testing.assert_frame_equal(res.results[cols].reset_index(drop=True),
                                  local.results[cols].reset_index(drop=True))
