"""The Docker executor against a real dockerd started here (Debian's docker.io; `make apt` installs it), with the
harness image built from docker/harness.Dockerfile on a Debian base made locally with debootstrap (no registry is
reachable). A demo cell runs inside containers and gives the local executor's numbers; hostile jobs are contained.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from tests.conftest import CACHE, REPO, small_run_spec

from selbench.harness import runner
from selbench.harness.store import Store

pytestmark = [pytest.mark.docker, pytest.mark.slow]
BASE = "selbench-base:bookworm"
IMAGE = "selbench-harness:test"


@pytest.fixture(scope="session")
def dockerd():
    """A private dockerd: its own data/exec roots and socket (ENV-NOTES: no iptables, no bridge), stopped at the end."""
    if os.geteuid() != 0 or not shutil.which("dockerd") or not shutil.which("debootstrap"):
        pytest.fail("the Docker tests need root, dockerd and debootstrap (`make apt` installs docker.io, iptables, "
                    "debootstrap)")
    root = Path(tempfile.mkdtemp(prefix="sbd-", dir="/tmp"))  # short: unix socket paths are limited to 108 bytes
    sock = f"unix://{root}/d.sock"
    log = open(root / "dockerd.log", "wb")
    proc = subprocess.Popen(["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                             "-H", sock, "--pidfile", str(root / "d.pid"), "--storage-driver", "overlay2",
                             "--iptables=false", "--bridge=none"], stdout=log, stderr=subprocess.STDOUT)
    from selbench.harness.executors.docker import client

    deadline = time.monotonic() + 60
    while True:
        try:
            docker = client(sock)
            break
        except RuntimeError:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"dockerd did not start: {(root / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield docker, sock
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    for sub in ("data", "exec"):  # overlay mounts and the daemon's netns outlive it; lazily unmount both
        subprocess.run(["umount", "-R", "-l", str(root / sub)], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def harness_image(dockerd) -> str:
    """Debian bookworm (minbase + python3 + venv) from debootstrap, imported, then the harness image built on it
    with the CPU torch wheel. The base's tarball is cached under .cache/tests/docker."""
    from selbench.harness.executors.docker import build_image

    docker, _ = dockerd
    tar = CACHE / "docker" / "bookworm-python3.tar"
    if not tar.exists():
        tar.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="sbroot-", dir="/tmp") as rootfs:
            subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                            "bookworm", rootfs, "http://deb.debian.org/debian"], check=True, capture_output=True)
            subprocess.run(["tar", "-C", rootfs, "-cf", f"{tar}.tmp", "."], check=True)
        os.replace(f"{tar}.tmp", tar)
    repo, tag = BASE.split(":")
    docker.api.import_image_from_file(str(tar), repository=repo, tag=tag)
    wheels = [Path(p) for p in glob.glob("/opt/wheels/torch-2.13.0*.whl")]
    assert wheels, "the CPU torch wheel (/opt/wheels) is needed: PyPI's torch is the multi-GB CUDA build"
    ca = Path("/etc/ssl/certs/ca-certificates.crt")  # this machine's bundle: pip inside the build needs it here
    build_image(docker, IMAGE, "harness.Dockerfile", REPO, base_image=BASE, wheels=wheels,
                ca_bundle=ca if ca.exists() else None)
    return IMAGE


def docker_spec(tmp_path: Path, world: Path, sock: str, selectors: list[dict], **executor) -> Path:
    spec = small_run_spec(world, tmp_path / "store", selectors)
    spec["budgets"] = [0.25]
    spec["executor"] = {"kind": "docker", "image": IMAGE, "docker_host": sock, "max_parallel": 2,
                        "threads_per_job": 1, **executor}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def clean_docker_run(small_world, harness_image, dockerd, tmp_path_factory) -> dict:
    """random at 25 % and the full-data reference, every stage in containers: the clean store the hostile test
    starts from."""
    _, sock = dockerd
    tmp = tmp_path_factory.mktemp("clean-docker")
    result = runner.run(docker_spec(tmp, small_world, sock, [{"name": "random", "label": "picker"}]))
    return {"result": result, "store": tmp / "store"}


def assert_local_numbers(board, small_run: dict) -> None:
    """The reference and the random cell at 25 % (``picker``) scored what the local run scored, column by column."""
    local = small_run["board"].set_index("selector")
    cols = [c for c in board.columns if c.startswith(("emb_", "rel_")) or c == "arp_v1"]
    for who, budget in (("full", "100%"), ("picker", "25%")):
        mine = board[board["budget"] == budget].loc[who, cols]
        theirs = local[local["budget"] == budget].loc[who, cols]
        assert mine.astype(float).tolist() == pytest.approx(theirs.astype(float).tolist(), abs=1e-9), who


def test_a_demo_cell_in_containers_gives_the_local_numbers(small_run, clean_docker_run) -> None:
    board = clean_docker_run["result"].board.set_index("selector")
    assert set(board["status"]) == {"done"}
    assert_local_numbers(board, small_run)
    # every stage ran in the image: its Python is Debian's, not this venv's
    store = clean_docker_run["store"]
    for meta in (store / "jobs").glob("*/meta.json"):
        env = json.loads(meta.read_text())["environment"]
        assert env["python"] != os.sys.version.split()[0] and env["python"].startswith("3.11"), meta
    assert all(f"in {IMAGE}" in p.read_text() for p in (store / "logs").glob("*.log"))
    assert not any((store / "views").iterdir())  # the selectors' store skeletons are gone with their containers


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


HOSTILE = [  # (selector, what it tries, what the cell's reason must say)
    ("crash", "raise", "selector exploded on purpose"),
    ("hang", "sleep for an hour", "timed out after 30s"),
    ("memory", "allocate without end", "out of memory (container OOM-killed at its 1500 MB limit)"),
    ("fork-bomb", "fork without end", "fork bomb stopped after"),
    ("network", "connect to the host", "Error"),
    ("write-outside", "plant a file in the store", "Read-only file system"),
    # it sees only its own input's meta.json, read-only (other jobs' results are not in its view of the store)
    ("rewrite-results", "rewrite every stored result", "Read-only file system: '"),
    ("read-outside", "list the store", "visible outside my output: "),
    ("wrong-count", "too few indices", "returned 99 indices for a budget of 100"),
    ("duplicates", "one index 100 times", "returned duplicate indices"),
    ("out-of-range", "indices past the pool", "index out of range [0, 400)"),
    ("disable-check", "replace the selection check, then too few", "rejected: 99 indices, but the budget"),
    ("wrong-ids", "a uid list naming other samples", "does not list the selected rows' uids"),
    ("forge-timings", "report 1 ms for 3 s of work", "returned 99 indices for a budget of 100"),
]
CLASSES = {"crash": "CrashSelector", "hang": "HangSelector", "memory": "MemorySelector",
           "fork-bomb": "ForkBombSelector", "network": "NetworkSelector", "write-outside": "WriteOutsideSelector",
           "rewrite-results": "RewriteResultsSelector", "read-outside": "ReadOutsideSelector",
           "wrong-count": "WrongCountSelector", "duplicates": "DuplicateSelector", "out-of-range": "OutOfRangeSelector",
           "disable-check": "DisableCheckSelector", "wrong-ids": "WrongIdsSelector",
           "forge-timings": "ForgeTimingsSelector"}


def test_hostile_jobs_are_contained_and_reported(small_world, clean_docker_run, dockerd, tmp_path) -> None:
    """Fourteen hostile selectors run beside random on a store that already holds the clean run's results: each
    fails with its reason in the cell, and every clean job's files stay byte-identical."""
    _, sock = dockerd
    listener = socket.create_server(("127.0.0.1", 0))
    port, got = listener.getsockname()[1], []
    listener.settimeout(120)

    def accept() -> None:
        try:
            got.append(listener.accept())
        except OSError:  # closed or timed out: nothing connected
            pass

    threading.Thread(target=accept, daemon=True).start()
    clean = clean_docker_run["store"]
    shutil.copytree(clean, tmp_path / "store")
    before = {d.name: _files(d) for d in (clean / "jobs").iterdir()}
    hostile = [{"name": name, "impl": f"tests.harness.hostile:{CLASSES[name]}",
                **({"config": {"port": port}} if name == "network" else {})} for name, _, _ in HOSTILE]
    spec = docker_spec(tmp_path, small_world, sock, [{"name": "random"}, *hostile],
                       timeout_s={"score": 30, "finetune": 600, "evaluate": 600, "prepare": 120},
                       memory_limit_mb=1500, sandbox_pids=128, docker_mounts=[str(REPO / "tests")],
                       sandbox_env={"PYTHONPATH": str(REPO)})  # executor.env never reaches selector containers
    result = runner.run(spec)
    listener.close()
    board = result.board.set_index("selector")
    store = tmp_path / "store"
    assert board.loc["random", "status"] == "done" and board.loc["full", "status"] == "done"
    for name, _, reason in HOSTILE:
        assert board.loc[name, "status"] == "failed", name
        assert reason in board.loc[name, "reason"], (name, board.loc[name, "reason"])
    assert not got  # no connection reached the host
    assert not list(store.rglob("planted.txt"))
    assert f"/jobs/{next(p.stem for p in (store / 'specs').glob('prepare-*.json'))}/" in board.loc["rewrite-results",
                                                                                                  "reason"]
    # what the reader saw: its own spec and the pool it was given, nothing else of the store
    specs = {json.loads(p.read_text())["config"]["selector"]: p.stem for p in (store / "specs").glob("score-*.json")}
    prepare = next(p.stem for p in (store / "specs").glob("prepare-*.json"))
    seen = board.loc["read-outside", "reason"].split("visible outside my output: ")[1]
    assert sorted(item.rsplit(" (", 1)[0] for item in seen.split(", ")) == sorted(
        [f"jobs/{prepare}", f"specs/{specs['read-outside']}.json"])
    # the forger's own meta.json says 1 ms; the leaderboard's time is the daemon's measurement
    meta = Store(store).meta(specs["forge-timings"])
    assert meta["timings"]["self_reported"]["wall_s"] == 0.001 and meta["timings"]["wall_s"] >= 3
    forged = result.timings.set_index("selector").loc["forge-timings"]
    assert forged["score_wall_s"] >= 3
    # the clean run's jobs were reused, untouched, and every sealed job still verifies
    after = {d.name: _files(d) for d in (store / "jobs").iterdir() if d.name in before}
    assert after == before
    s = Store(store)
    assert all(s.verify(s.read_job(d.name)) is None for d in (store / "jobs").iterdir() if s.timings(d.name))
    assert not any((store / "views").iterdir())


def test_a_package_submission_is_built_into_its_image_and_reaches_the_leaderboard(small_run, harness_image, dockerd,
                                                                                  tmp_path) -> None:
    """`selbench submit PACKAGE` under the Docker executor: the package becomes an image (FROM the harness image,
    built without network) that describes itself; nothing is installed here; its score/select jobs run in it."""
    from selbench.harness.spec import ExecutorSpec
    from selbench.harness.submit import SubmissionError, describe_image, from_package, submit

    docker, sock = dockerd
    store = tmp_path / "store"
    shutil.copytree(small_run["root"] / "store", store)  # baselines cached (their jobs ran locally)
    executor = {"kind": "docker", "image": IMAGE, "docker_host": sock, "max_parallel": 2, "threads_per_job": 1}
    spec = {**small_run["spec"], "store": str(store), "budgets": [0.25], "executor": executor}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    paths_before = list(sys.path)
    sub = from_package(REPO / "templates" / "selector", store, ExecutorSpec(**executor))
    assert sub.image == "selbench-submission/balanced-selector:0.1.0" and sub.site is None
    assert sys.path == paths_before and not (store / "submissions").exists()
    info = describe_image(ExecutorSpec(**executor), sub.image, "balanced")
    assert info["impl"] == "balanced_selector:BalancedSelector" and "properties" in info["config_schema"]
    with pytest.raises(SubmissionError, match="no selector 'nope' is registered in this image"):
        describe_image(ExecutorSpec(**executor), sub.image, "nope")
    board = submit(path, sub).board.set_index("selector")
    row = board.loc["balanced [submission 0.1.0]"]
    assert row["status"] == "done" and row["arp_v1"] == row["arp_v1"]  # not NaN
    logs = "".join(p.read_text() for p in (store / "logs").glob("score-*.log"))
    assert f"in {sub.image}" in logs


EVAL_IMAGE = "selbench-eval:test"
EVAL_OPT_IN = "SELBENCH_TEST_EVAL_IMAGE"  # the eval image installs vLLM's 3.5 GB: built on request, not in CI


@pytest.fixture(scope="module")
def eval_image(dockerd, harness_image) -> dict:
    """docker/eval.Dockerfile FROM the harness image, with the CPU vLLM lock (as `make vllm` installs it)."""
    from selbench.harness.executors.docker import build_image

    docker, _ = dockerd
    wheels = [Path(p) for p in glob.glob("/opt/wheels/torch-2.13.0*.whl")]
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    t0 = time.monotonic()
    log = build_image(docker, EVAL_IMAGE, "eval.Dockerfile", REPO, base_image=harness_image, wheels=wheels,
                      ca_bundle=ca if ca.exists() else None,
                      build_args={"HARNESS_IMAGE": harness_image,
                                  "VLLM_INSTALL": "torch==2.13.0 -r /src/requirements/vllm-lock.txt --no-deps"})
    return {"log": log, "seconds": time.monotonic() - t0}


@pytest.mark.skipif(not os.environ.get(EVAL_OPT_IN), reason=f"set {EVAL_OPT_IN}=1 to build the eval image (vLLM, "
                                                             "3.5 GB) and evaluate in it")
def test_the_eval_image_builds_with_a_compiler_and_serves_the_local_numbers(small_run, eval_image, dockerd,
                                                                           tmp_path) -> None:
    """The evaluation image: a C compiler (vLLM's Triton launcher), vLLM importable; a cell evaluated with the
    lmms-eval-vllm backend inside it (vLLM's CPU server in the container) scores what the HF backend scored here."""
    log = eval_image["log"]
    assert "cc (Debian" in log and "\nvllm 0.32.0" in log, log[-3000:]
    _, sock = dockerd
    spec = small_run_spec(Path(small_run["spec"]["world"]["out"]), tmp_path / "store", [{"name": "random",
                                                                                      "label": "picker"}])
    spec["budgets"] = [0.25]
    spec["evaluation"] = {**spec["evaluation"], "backend": "lmms-eval-vllm", "vllm_args": ["--enforce-eager"]}
    spec["executor"] = {"kind": "docker", "image": EVAL_IMAGE, "docker_host": sock, "max_parallel": 1,
                        "threads_per_job": 2}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    board = runner.run(path).board.set_index("selector")
    assert set(board["status"]) == {"done"}, board.get("reason")
    assert_local_numbers(board, small_run)
    evaluated = Store(tmp_path / "store").path(next(iter(
        d.name for d in (tmp_path / "store" / "jobs").iterdir() if d.name.startswith("evaluate-"))))
    assert "vllm" in json.dumps(json.loads((evaluated / "results.json").read_text())), "not served by vLLM"
