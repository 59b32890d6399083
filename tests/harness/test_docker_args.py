"""What the Docker executor asks the daemon for, per job (no daemon needed: the container arguments are data).
GPU requests can only be checked for their shape here — no NVIDIA runtime on these machines."""

from __future__ import annotations

import os
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

    assert args["cap_drop"] == ["ALL"] and args["security_opt"] == ["no-new-privileges"]
    assert args["user"] == f"{os.getuid()}:{os.getgid()}"  # harness code: the store stays the user's

    score = Job("score", {"selector": "x"}, {"pool": prepare.id})  # selector code: sandboxed
    ex.store.write_job(score)
    (ex.store.path(prepare.id)).mkdir()
    staging = ex.store.staging(score.id)
    args = ex.container_args(score, staging=staging)
    mounts = {(m["Target"], m["Source"]): m["ReadOnly"] for m in args["mounts"]}
    view = ex.store.root.resolve() / "views" / staging.name
    # the store is an empty skeleton with only its spec, its input job and its staging folder in it
    assert mounts == {(store, str(view)): True,
                      (f"{store}/specs/{score.id}.json", f"{store}/specs/{score.id}.json"): True,
                      (f"{store}/jobs/{prepare.id}", f"{store}/jobs/{prepare.id}"): True,
                      (str(staging), str(staging)): False,
                      (str(pool), str(pool)): True}  # its images (the prepare job's config names them)
    skeleton = sorted(str(p.relative_to(view)) for p in view.rglob("*"))
    assert skeleton == sorted(["hashes", "jobs", "locks", "logs", "specs", "timings", f"specs/{score.id}.json",
                               f"jobs/{prepare.id}", f"jobs/{staging.name}"])
    assert args["network_mode"] == "none" and "device_requests" not in args
    assert args["environment"]["SELBENCH_STAGING"] == str(staging)
    assert "A" not in args["environment"]  # executor.env (a judge's key, say) stays out of selector code's reach
    # never root; the spec's memory limit wins over the sandbox default
    uid = 65534 if os.getuid() == 0 else os.getuid()
    assert args["user"].split(":")[0] == str(uid) and staging.stat().st_uid == uid
    assert args["mem_limit"] == "2048m" and args["pids_limit"] == 512 and args["cap_drop"] == ["ALL"]
    assert args["tmpfs"] == {"/tmp": "size=2048m,mode=1777", "/dev/shm": "size=2048m"}


def test_the_hf_cache_reaches_the_harness_stages_only(tmp_path: Path) -> None:
    (tmp_path / "hf").mkdir()
    ex = executor(tmp_path, hf_home=tmp_path / "hf")
    ev = Job("evaluate", {"benchmarks": ["mme"]})
    args = ex.container_args(ev, staging=ex.store.staging(ev.id))
    assert {m["Target"]: m["ReadOnly"] for m in args["mounts"]}[str(tmp_path / "hf")] is False
    assert args["environment"]["HF_HOME"] == str(tmp_path / "hf") and args["environment"]["HF_DATASETS_OFFLINE"] == "1"
    score = Job("score", {"selector": "x"})
    ex.store.write_job(score)
    args = ex.container_args(score, staging=ex.store.staging(score.id))
    assert str(tmp_path / "hf") not in {m["Target"] for m in args["mounts"]} and "HF_HOME" not in args["environment"]


def test_selector_containers_are_limited_by_default(tmp_path: Path) -> None:
    ex = executor(tmp_path)  # no memory or CPU limits in the spec
    score = Job("score", {"selector": "x"})
    ex.store.write_job(score)
    args = ex.container_args(score, staging=ex.store.staging(score.id))
    assert args["mem_limit"] == "16384m" and args["nano_cpus"] == 4_000_000_000 and args["pids_limit"] == 512
    ft = Job("finetune", {"target": "x"})
    assert "mem_limit" not in ex.container_args(ft, staging=ex.store.staging(ft.id))  # harness code: the spec's


def test_host_paths_and_outermost(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "f.json").write_text("{}")
    found = host_paths({"x": [str(tmp_path / "a" / "b"), {"y": str(tmp_path / "a" / "f.json")}],
                        "rel": "a/b", "missing": "/does/not/exist"})
    assert found == {tmp_path / "a" / "b", tmp_path / "a"}
    assert outermost(found) == [tmp_path / "a"]
