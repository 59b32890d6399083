"""What the Docker executor asks the daemon for, per job (no daemon needed: the container arguments are data).
GPU requests can only be checked for their shape here — no NVIDIA runtime on these machines."""

from __future__ import annotations

from pathlib import Path

from selbench.harness.executors.docker import DockerExecutor, host_paths, outermost
from selbench.harness.spec import ExecutorSpec
from selbench.harness.store import Job, Store


def executor(tmp_path: Path, **spec) -> DockerExecutor:
    ex = DockerExecutor.__new__(DockerExecutor)  # skip the daemon ping: only the arguments are under test
    ex.spec = ExecutorSpec(kind="docker", image="img:1", **spec)
    ex.store = Store(tmp_path / "store")
    return ex


def test_mounts_limits_gpu_and_sandbox(tmp_path: Path) -> None:
    pool = tmp_path / "world" / "pool"
    (pool / "images").mkdir(parents=True)
    (pool / "pool.json").write_text("[]")
    ex = executor(tmp_path, memory_limit_mb=2048, threads_per_job=2, docker_network="host", env={"A": "1"})
    prepare = Job("prepare", {"pool": str(pool / "pool.json"), "images": str(pool / "images"),
                              "file": f"{pool / 'pool.json'}:2:0"})
    ex.store.write_job(prepare)
    ft = Job("finetune", {"target": str(tmp_path / "world")}, {"pool": prepare.id})
    args = ex.container_args(ft, (3,))
    mounts = {m["Target"]: m["ReadOnly"] for m in args["mounts"]}
    store = str((tmp_path / "store").resolve())
    assert mounts == {store: False, str(tmp_path / "world"): True}  # pool folder is inside the world folder
    assert args["device_requests"][0]["DeviceIDs"] == ["3"]
    assert args["device_requests"][0]["Capabilities"] == [["gpu"]]
    assert args["mem_limit"] == args["memswap_limit"] == "2048m" and args["nano_cpus"] == 2_000_000_000
    assert args["network_mode"] == "host" and args["read_only"] and args["environment"]["A"] == "1"
    assert args["command"] == ["python", "-m", "selbench.harness.job", store, ft.id]
    # a multi-process fine-tune gets all its devices in one request
    assert ex.container_args(ft, (4, 5))["device_requests"][0]["DeviceIDs"] == ["4", "5"]

    score = Job("score", {"selector": "x"}, {"pool": prepare.id})  # selector code: sandboxed
    args = ex.container_args(score)
    mounts = {m["Target"]: m["ReadOnly"] for m in args["mounts"]}
    staging = str(ex.sandbox_staging(score.id))
    assert mounts[store] is True and mounts[staging] is False and args["network_mode"] == "none"
    assert args["environment"]["SELBENCH_STAGING"] == staging and "device_requests" not in args


def test_host_paths_and_outermost(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "f.json").write_text("{}")
    found = host_paths({"x": [str(tmp_path / "a" / "b"), {"y": str(tmp_path / "a" / "f.json")}],
                        "rel": "a/b", "missing": "/does/not/exist"})
    assert found == {tmp_path / "a" / "b", tmp_path / "a"}
    assert outermost(found) == [tmp_path / "a"]
