"""k-means on GPU or CPU (selectors/_kmeans.py) and the harness image's faiss choice (docker/harness.Dockerfile).

No GPU here: the GPU branch is exercised with faiss patched to look like a GPU build that sees one GPU (the real CPU
k-means runs underneath), and the Dockerfile's install steps are run by ``sh`` with pip and python stubbed out."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from selbench.selectors import _kmeans
from selbench.selectors._kmeans import ENV, faiss_kmeans, kmeans_device, kmeans_note
from selbench.selectors.coincide import spherical_kmeans
from selbench.selectors.xmas import trajectory_clusters

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def auto(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture
def fake_gpu(monkeypatch, auto):
    """faiss looks like a GPU build that sees ``n`` GPUs; returns a setter for n."""
    n = {"gpus": 1}
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: n["gpus"])
    return lambda gpus: n.update(gpus=gpus)


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_cpu_path_is_the_direct_faiss_call_as_before(auto) -> None:
    """What both selectors called before the GPU path existed, verbatim: same centroids and labels, bit for bit."""
    x = unit_rows(600, 32, seed=1)
    km = faiss.Kmeans(32, 12, niter=50, spherical=True, seed=3, verbose=False, max_points_per_centroid=100_000)
    km.train(x)
    centroids, labels = spherical_kmeans(x.astype(np.float64), 12, niter=50, seed=3)
    assert np.array_equal(labels, km.index.search(x, 1)[1][:, 0].astype(np.int64))
    assert np.array_equal(centroids, km.centroids.astype(np.float64)) and labels.dtype == np.int64

    traj = np.random.default_rng(2).normal(size=(400, 7))
    traj[::37, 2] = np.nan  # NaN scores count as 0
    t32 = np.ascontiguousarray(np.nan_to_num(traj, nan=0.0), dtype=np.float32)
    km = faiss.Kmeans(7, 9, niter=100, seed=4, verbose=False)
    km.train(t32)
    assert np.array_equal(trajectory_clusters(traj, 9, niter=100, seed=4),
                          km.index.search(t32, 1)[1][:, 0].astype(np.int64))


def test_float16_features_cluster_from_their_mapped_file_bit_for_bit(monkeypatch, auto, tmp_path) -> None:
    """COINCIDE's stored float16 features: trained on as fp16 codes and assigned block by block — the centroids and
    labels of ``Kmeans.train`` on the float32 copy, bit for bit, without making that N × D float32 copy."""
    import tracemalloc

    n, d = 4 * 4096 + 7, 512  # with 4,096-row blocks the last has 7 rows: faiss would search it with its own kernel
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float16, shape=(n, d))
    x[:] = unit_rows(n, d, seed=8)
    x.flush()
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    monkeypatch.setattr(_kmeans, "SEARCH_BLOCK", 4096)  # five blocks (training's decoding too), the last one short
    tracemalloc.start()
    centroids, labels = spherical_kmeans(mapped, 40, niter=8, seed=3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < n * d * 4 / 2, f"{peak / 2**20:.1f} MiB traced: the float32 copy is {n * d * 4 / 2**20:.1f} MiB"

    x32 = np.asarray(mapped, dtype=np.float32)
    km = faiss.Kmeans(d, 40, niter=8, spherical=True, seed=3, verbose=False, max_points_per_centroid=100_000)
    km.train(x32)
    assert np.array_equal(centroids, km.centroids.astype(np.float64))
    assert np.array_equal(labels, km.index.search(x32, 1)[1][:, 0].astype(np.int64))
    distances, found = _kmeans.search_blocks(km.index, mapped)  # the distances too, not only the labels
    one_call = km.index.search(x32, 1)
    assert np.array_equal(distances, one_call[0][:, 0]) and np.array_equal(found, one_call[1][:, 0])
    assert faiss.cvar.distance_compute_blas_threshold == 128_000  # faiss's setting is restored

    x[5_000, 17] = np.nan  # faiss would abort the process on it (it checks float32 input only)
    x.flush()
    with pytest.raises(ValueError, match=r"row 5000 \(of 16391\) is not finite"):
        spherical_kmeans(np.load(tmp_path / "x.npy", mmap_mode="r"), 40, niter=2, seed=3)


def test_device_choice_without_gpu_support(monkeypatch, auto) -> None:
    assert not _kmeans.faiss_has_gpu(faiss)  # this venv (and the CPU image) has faiss-cpu
    assert kmeans_device() == "cpu"
    for value, want in (("cpu", "cpu"), (" CPU ", "cpu"), ("auto", "cpu"), ("", "cpu")):
        monkeypatch.setenv(ENV, value)
        assert kmeans_device() == want
    monkeypatch.setenv(ENV, "gpu")
    with pytest.raises(RuntimeError, match="no GPU support"):
        kmeans_device()
    monkeypatch.setenv(ENV, "cuda")
    with pytest.raises(ValueError, match="auto, cpu or gpu"):
        kmeans_device()


def test_device_choice_with_a_gpu_build(monkeypatch, fake_gpu) -> None:
    assert kmeans_device() == "gpu"  # GPU support + a visible GPU: auto picks it
    monkeypatch.setenv(ENV, "cpu")
    assert kmeans_device() == "cpu"  # forced
    monkeypatch.setenv(ENV, "gpu")
    assert kmeans_device() == "gpu"
    fake_gpu(0)  # GPU build, no GPU visible (CUDA_VISIBLE_DEVICES empty, a CPU-only job)
    with pytest.raises(RuntimeError, match="sees no GPU"):
        kmeans_device()
    monkeypatch.delenv(ENV)
    assert kmeans_device() == "cpu"


def test_gpu_branch_moves_the_same_kmeans_index_to_one_gpu(monkeypatch, fake_gpu) -> None:
    made: list[dict] = []
    moved: list[tuple] = []
    real = faiss.Kmeans

    def recording(d, k, **kw):
        made.append(dict(kw))
        return real(d, k, **kw)

    def to_gpu(resources, device, index):
        moved.append((device, type(index).__name__))
        return index  # no GPU here: the CPU index stands in for it

    monkeypatch.setattr(faiss, "Kmeans", recording)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    x = unit_rows(300, 16, seed=5)
    on_gpu = faiss_kmeans(x, 6, niter=10, seed=7, spherical=True)
    faiss_kmeans(x, 6, niter=10, seed=7)
    monkeypatch.setenv(ENV, "cpu")
    on_cpu = faiss_kmeans(x, 6, niter=10, seed=7, spherical=True)
    assert made == [{"niter": 10, "seed": 7, "verbose": False, "spherical": True},
                    {"niter": 10, "seed": 7, "verbose": False},
                    {"niter": 10, "seed": 7, "verbose": False, "spherical": True}]
    assert moved == [(0, "IndexFlatIP"), (0, "IndexFlatL2")]  # device 0 only; nothing moved when forced to cpu
    assert np.array_equal(on_gpu[1], on_cpu[1])
    assert kmeans_note() == f"k-means on cpu (faiss {faiss.__version__}; {ENV}=cpu)"
    monkeypatch.delenv(ENV)
    assert kmeans_note() == f"k-means on gpu (faiss {faiss.__version__})"


# ---------------------------------------------------------------- the harness image's faiss (no docker build)

def dockerfile_runs() -> tuple[dict[str, str], list[str]]:
    """ARG defaults and RUN bodies of docker/harness.Dockerfile, continuation lines joined as docker joins them."""
    text = re.sub(r"\\\n", "", (REPO / "docker" / "harness.Dockerfile").read_text())
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    args = {m[1]: m[2].strip('"') for ln in lines if (m := re.match(r"ARG (\w+)=(.*)$", ln))}
    return args, [ln[4:] for ln in lines if ln.startswith("RUN ")]


STUB = """#!{python}
import json, os, sys
files = {{a: open(a).read() for p, a in zip(sys.argv[1:], sys.argv[2:]) if p == "-r"}}
with open(os.environ["STUB_LOG"], "a") as fh:
    fh.write(json.dumps({{"cmd": os.path.basename(sys.argv[0]), "args": sys.argv[1:], "files": files}}) + "\\n")
"""


def run_install_steps(tmp_path: Path, **build_args: str) -> list[dict]:
    """Run the Dockerfile's RUN steps under ``sh`` with its build args; pip, python and rm only log their calls.
    Absolute paths move under tmp_path (requirements/ is this checkout's)."""
    args, runs = dockerfile_runs()
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "requirements").symlink_to(REPO / "requirements")
    for sub in ("tmp", "wheels", "certs"):
        (root / sub).mkdir()
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("pip", "python", "python3", "rm"):
        (stubs / name).write_text(STUB.format(python=sys.executable))
        (stubs / name).chmod(stubs.joinpath(name).stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.jsonl"
    def move(s: str) -> str:
        return re.sub(r"(?<![\w.])/(src/requirements|tmp|wheels|certs)\b", lambda m: f"{root}/{m[1]}", s)

    env = {**os.environ, **args, **{k: move(v) for k, v in build_args.items()},
           "PATH": f"{stubs}:{os.environ['PATH']}", "STUB_LOG": str(log)}
    for body in runs:
        subprocess.run(["sh", "-ec", move(body)], env=env, check=True)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    for c in calls:  # back to the image's paths
        c["args"] = [a.replace(str(root), "") for a in c["args"]]
        c["files"] = {k.replace(str(root), ""): v for k, v in c["files"].items()}
    return calls


def lock_text() -> str:
    return (REPO / "requirements" / "lock.txt").read_text()


def test_cpu_image_installs_the_lock_as_before(tmp_path) -> None:
    pips = [c for c in run_install_steps(tmp_path) if c["cmd"] == "pip"]
    assert [c["args"] for c in pips] == [
        ["install", "-q", "--find-links", "/wheels", "torch==2.13.0"],
        ["install", "-q", "--no-deps", "-r", "/src/requirements/lock.txt"],
        ["install", "-q", "--no-deps", "--no-build-isolation", "/src"]]
    assert "faiss-cpu==1.15.1" in pips[1]["files"]["/src/requirements/lock.txt"].splitlines()
    pythons = [c for c in run_install_steps(tmp_path / "again") if c["cmd"] == "python"]
    assert len(pythons) == 1  # only the import check; no GPU check


def test_gpu_image_swaps_faiss_cpu_for_faiss_gpu_and_checks_it(tmp_path) -> None:
    calls = run_install_steps(tmp_path, FAISS_INSTALL="-r /src/requirements/faiss-gpu.txt")
    pips = [c for c in calls if c["cmd"] == "pip"]
    assert pips[1]["args"] == ["install", "-q", "--no-deps", "-r", "/tmp/lock-gpu-faiss.txt",
                               "-r", "/src/requirements/faiss-gpu.txt"]
    lock = pips[1]["files"]["/tmp/lock-gpu-faiss.txt"].splitlines()
    assert lock == [ln for ln in lock_text().splitlines() if not ln.startswith("faiss-cpu==")]
    gpu_pins = [ln for ln in pips[1]["files"]["/src/requirements/faiss-gpu.txt"].splitlines()
                if ln and not ln.startswith("#")]
    assert all(re.fullmatch(r"[\w.-]+==[\w.]+", ln) for ln in gpu_pins)  # --no-deps: every dependency pinned
    pins = dict(ln.split("==") for ln in gpu_pins)
    assert pins["faiss-gpu"] == dict(ln.split("==") for ln in lock_text().splitlines() if "==" in ln)["faiss-cpu"]
    assert {"nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12", "nvidia-curand-cu12"} <= set(pins)

    check = [c for c in calls if c["cmd"] == "python"][-1]["args"]
    assert check[0] == "-c" and "StandardGpuResources" in check[1]
    with pytest.raises(AssertionError, match="without GPU support"):  # this venv's faiss-cpu fails the check
        exec(check[1], {})
