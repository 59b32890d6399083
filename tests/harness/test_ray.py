"""The Ray executor against a real Ray cluster on 127.0.0.1 (``ray start --head``, one declared GPU so the
GPU-stage scheduling is exercised): cells complete, a crashing and a hanging selector end their own cells, GPU
stages get CUDA_VISIBLE_DEVICES from Ray and CPU stages none, and the results equal the local executor's."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
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


# ---------------------------------------------------------------- a score job's ranks as Ray tasks on two nodes

@pytest.fixture(scope="module")
def two_nodes():
    """A head and a second node on 127.0.0.1, one CPU and one (declared) GPU each: a two-rank placement group
    must put one rank on each."""
    ray_bin = Path(sys.executable).parent / "ray"
    tmp = Path(tempfile.mkdtemp(prefix="sbray2-", dir="/tmp"))
    (tmp / "home").mkdir()
    env = {"HOME": str(tmp / "home"), "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        port = _free_port()
        common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=1", "--disable-usage-stats"]
        subprocess.run([str(ray_bin), "start", "--head", f"--port={port}", f"--temp-dir={tmp / 'ray'}",
                        "--include-dashboard=false", *common], env=os.environ, check=True, capture_output=True,
                       timeout=120)
        try:
            subprocess.run([str(ray_bin), "start", f"--address=127.0.0.1:{port}", *common], env=os.environ,
                           check=True, capture_output=True, timeout=120)
            yield f"127.0.0.1:{port}"
        finally:
            import ray

            if ray.is_initialized():
                ray.shutdown()
            subprocess.run([str(ray_bin), "stop", "--force"], env=os.environ, capture_output=True, timeout=120)
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.ray
def test_a_split_score_job_runs_its_ranks_as_ray_tasks_on_two_nodes(tmp_path, small_world, two_nodes) -> None:
    """executor.score_workers 2 under Ray: the job's placement group puts rank 0 and rank 1 on different nodes,
    they exchange shards through the store, and the artifacts equal one process's bit for bit."""
    from selbench.harness.contracts import ScoreConfig
    from selbench.harness.executors import make_executor
    from selbench.harness.plan import build_plan
    from selbench.harness.stages.score import score
    from selbench.selectors.base import load_artifacts

    path = _spec(tmp_path, small_world, {"kind": "ray", "ray_address": two_nodes, "score_workers": 2,
                                         "max_parallel": 1, "timeout_s": {"score": 600}}, hostile=False)
    raw = yaml.safe_load(path.read_text())
    raw["selectors"] = [{"name": "scalselect"}]
    path.write_text(yaml.safe_dump(raw))
    spec = runner.prepare_spec(path)
    plan = build_plan(spec)
    jobs = [j for j in plan.jobs if j.stage in ("prepare", "score")]
    job = next(j for j in jobs if j.stage == "score")
    assert job.config["workers"] == 2
    store = Store(spec.store)
    outcomes = make_executor(spec.executor, store).run(jobs)
    assert outcomes[job.id].status == "done", store.log_path(job.id).read_text()[-3000:]

    meta = json.dumps(store.meta(job.id))
    assert "shared by 2 processes as Ray tasks" in meta and "on 2 node(s)" in meta, meta
    assert store.meta(job.id)["timings"]["n_gpus"] == 2  # one declared GPU per rank

    one = tmp_path / "one-process"
    cfg = ScoreConfig.parse(job).model_copy(update={"workers": 1})
    score(cfg, store.path(job.deps["pool"]) / "manifest.parquet", one)
    split, single = load_artifacts(store.path(job.id) / "artifacts.npz"), load_artifacts(one / "artifacts.npz")
    assert sorted(split) == sorted(single)
    for key in single:
        assert np.array_equal(split[key], single[key]), key


@pytest.mark.ray
def test_a_failed_ray_rank_is_reported_with_its_log(tmp_path, two_nodes, monkeypatch) -> None:
    """A rank that exits 3 fails the job with its node and log; the ranks get executor.env's variables (named in the
    placement info, valued from rank 0's environment) and exactly their bundle's GPUs (none here)."""
    import ray
    from ray.util import placement_group, remove_placement_group

    from selbench.models.extract import RankError, wait_for
    from selbench.models.ranks import RayRanks

    ray.init(address=two_nodes, namespace="t", log_to_driver=False)
    try:
        group = placement_group([{"CPU": 1.0}] * 2, name="ranks-fail")
        ray.get(group.ready(), timeout=60)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        argv = [sys.executable, "-c", "import os, sys; print('boom in rank', sys.argv[1], os.environ.get("
                "'HF_HUB_OFFLINE'), repr(os.environ['CUDA_VISIBLE_DEVICES'])); sys.exit(3)"]
        how = {"address": two_nodes, "namespace": "t", "placement_group": "ranks-fail", "cpus": 1.0, "gpus": 0.0,
               "env": ["HF_HUB_OFFLINE"]}
        with pytest.raises(RankError, match=r"(?s)rank 1 of 2 \(Ray task, pid \d+ on .*\) exited with code 3"
                                            r".*boom in rank 1 1 ''.*shard-9"):
            with RayRanks(argv, 2, tmp_path, how) as ranks:
                wait_for([tmp_path / "shard-9.npy"], ranks.dead_peer)
        remove_placement_group(group)
    finally:
        ray.shutdown()


RANK0 = """
import json, sys, time
from pathlib import Path
from selbench.models.ranks import RayRanks
ranks = RayRanks([sys.executable, "-c", "import time; time.sleep(600)"], 2, Path(sys.argv[2]), json.loads(sys.argv[1]))
time.sleep(600)
"""


@pytest.mark.ray
def test_ray_ranks_die_with_rank_0(tmp_path, two_nodes) -> None:
    """A rank 0 that dies (killed by a timeout, its node lost) takes its Ray ranks along: Ray ends the tasks of the
    driver it was, and each rank's process dies with its task."""
    import time

    import ray
    from ray.util import placement_group, remove_placement_group
    from tests.harness.processes import job_processes

    store = tmp_path / "store"  # only a tag here: the ranks carry the job's SELBENCH_* variables
    ray.init(address=two_nodes, namespace="t", log_to_driver=False)
    try:
        group = placement_group([{"CPU": 1.0}] * 2, name="ranks-orphan")
        ray.get(group.ready(), timeout=60)
        how = {"address": two_nodes, "namespace": "t", "placement_group": "ranks-orphan", "cpus": 1.0, "gpus": 0.0}
        rank0 = subprocess.Popen([sys.executable, "-c", RANK0, json.dumps(how), str(tmp_path / "logs")],
                                 env={**os.environ, "SELBENCH_STORE": str(store.resolve())})
        deadline = time.monotonic() + 90
        while not [p for p in job_processes(store) if p.pid != rank0.pid]:  # rank 1's process, on the other node
            assert rank0.poll() is None and time.monotonic() < deadline, "rank 1 never started"
            time.sleep(0.5)
        rank0.kill()
        rank0.wait()
        deadline = time.monotonic() + 90
        while job_processes(store):
            assert time.monotonic() < deadline, f"rank 1 outlived rank 0: {job_processes(store)}"
            time.sleep(0.5)
        remove_placement_group(group)
    finally:
        ray.shutdown()


def test_ranks_a_cluster_cannot_hold_are_refused_before_any_work(tmp_path) -> None:
    """Two bundles of 2 CPUs + 1 GPU: two 1-GPU nodes hold them, one 2-GPU node with 2 CPUs does not (the totals
    would), nor nodes that have the GPUs but too few CPUs."""
    from types import SimpleNamespace

    from selbench.harness.executors.raycluster import RayExecutor
    from selbench.harness.spec import ExecutorSpec

    ex = RayExecutor(ExecutorSpec(kind="ray", score_workers=2, threads_per_job=2), Store(tmp_path / "s"))
    ex._gpu_jobs = True
    jobs = [SimpleNamespace(stage="score", id="score-abc", config={"workers": 2}),
            SimpleNamespace(stage="finetune", id="finetune-x", config={})]
    ex._check_rank_groups(jobs, [{"CPU": 2.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}])
    ex._check_rank_groups(jobs, [{"CPU": 4.0, "GPU": 2.0}])
    for nodes in ([{"CPU": 2.0, "GPU": 2.0}], [{"CPU": 1.0, "GPU": 1.0}, {"CPU": 3.0, "GPU": 1.0}]):
        with pytest.raises(ValueError, match=r"score job score-abc: executor.score_workers 2 needs 2 bundles of "
                                             r"2 CPU \+ 1 GPU at once; the Ray cluster's nodes \(.*\) hold 1"):
            ex._check_rank_groups(jobs, nodes)
    limited = RayExecutor(ExecutorSpec(kind="ray", score_workers=2, memory_limit_mb=8000), Store(tmp_path / "s"))
    with pytest.raises(ValueError, match="cannot run with executor.memory_limit_mb: rank 0 joins the cluster"):
        limited._check_rank_groups(jobs, [{"CPU": 4.0}])
