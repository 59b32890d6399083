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
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from selbench.harness import runner
from tests.conftest import CACHE, REPO, small_run_spec

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


def test_a_demo_cell_in_containers_gives_the_local_numbers(small_run, small_world, harness_image, dockerd,
                                                           tmp_path) -> None:
    _, sock = dockerd
    result = runner.run(docker_spec(tmp_path, small_world, sock, [{"name": "random", "label": "picker"}]))
    board = result.board.set_index("selector")
    assert set(board["status"]) == {"done"}
    local = small_run["board"].set_index("selector")
    cols = [c for c in board.columns if c.startswith(("emb_", "rel_")) or c == "arp_v1"]
    for who, budget in (("full", "100%"), ("picker", "25%")):
        mine = board[board["budget"] == budget].loc[who, cols]
        theirs = local[local["budget"] == budget].loc[who, cols]
        assert mine.astype(float).tolist() == pytest.approx(theirs.astype(float).tolist(), abs=1e-9), who
    # every stage ran in the image: its Python is Debian's, not this venv's
    store = tmp_path / "store"
    for meta in (store / "jobs").glob("*/meta.json"):
        env = json.loads(meta.read_text())["environment"]
        assert env["python"] != os.sys.version.split()[0] and env["python"].startswith("3.11"), meta
    assert all(f"in {IMAGE}" in p.read_text() for p in (store / "logs").glob("*.log"))


def test_hostile_jobs_are_contained_and_reported(small_world, harness_image, dockerd, tmp_path) -> None:
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
    hostile = "tests.harness.hostile:"
    spec = docker_spec(tmp_path, small_world, sock, [
        {"name": "random"},
        {"name": "crash", "impl": hostile + "CrashSelector"},
        {"name": "hang", "impl": hostile + "HangSelector"},
        {"name": "memory", "impl": hostile + "MemorySelector"},
        {"name": "network", "impl": hostile + "NetworkSelector", "config": {"port": port}},
        {"name": "write-outside", "impl": hostile + "WriteOutsideSelector"},
        {"name": "wrong-count", "impl": hostile + "WrongCountSelector"},
        {"name": "duplicates", "impl": hostile + "DuplicateSelector"},
        {"name": "out-of-range", "impl": hostile + "OutOfRangeSelector"},
    ], timeout_s={"score": 30, "finetune": 600, "evaluate": 600, "prepare": 120}, memory_limit_mb=1500,
        docker_mounts=[str(REPO / "tests")], env={"PYTHONPATH": str(REPO)})
    board = runner.run(spec).board.set_index("selector")
    listener.close()
    assert board.loc["random", "status"] == "done" and board.loc["full", "status"] == "done"
    assert "selector exploded on purpose" in board.loc["crash", "reason"]
    assert "timed out after 30s" in board.loc["hang", "reason"]
    assert "out of memory (container OOM-killed at its 1500 MB limit)" in board.loc["memory", "reason"]
    assert "Error" in board.loc["network", "reason"] and not got  # no connection reached the host
    assert "Read-only file system" in board.loc["write-outside", "reason"]
    assert not list((tmp_path / "store").rglob("planted.txt"))
    assert "returned 99 indices for a budget of 100" in board.loc["wrong-count", "reason"]
    assert "returned duplicate indices" in board.loc["duplicates", "reason"]
    assert "index out of range [0, 400)" in board.loc["out-of-range", "reason"]
    hostile_cells = ("crash", "hang", "memory", "network", "write-outside", "wrong-count", "duplicates", "out-of-range")
    assert all(board.loc[s, "status"] == "failed" for s in hostile_cells)


def test_a_selector_image_submission_reaches_the_leaderboard(small_run, harness_image, dockerd, tmp_path) -> None:
    """The template built as a container image (docker/selector.Dockerfile FROM the harness image) and submitted:
    its score/select jobs run in its image, the rest in the harness image."""
    from selbench.harness.executors.docker import build_selector_image
    from selbench.harness.submit import from_image, submit

    docker, sock = dockerd
    build_selector_image(docker, "balanced-selector:0.1.0", REPO / "templates" / "selector", REPO,
                         harness_image=harness_image)
    store = tmp_path / "store"
    shutil.copytree(small_run["root"] / "store", store)  # baselines cached (their jobs ran locally)
    spec = {**small_run["spec"], "store": str(store), "budgets": [0.25],
            "executor": {"kind": "docker", "image": IMAGE, "docker_host": sock, "max_parallel": 2,
                         "threads_per_job": 1}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    board = submit(path, from_image("balanced-selector:0.1.0", "balanced")).board.set_index("selector")
    row = board.loc["balanced [submission 0.1.0]"]
    assert row["status"] == "done" and row["arp_v1"] == row["arp_v1"]  # not NaN
    logs = "".join(p.read_text() for p in (store / "logs").glob("score-*.log"))
    assert "in balanced-selector:0.1.0" in logs
