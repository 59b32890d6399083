"""Selection math at LLaVA-665K scale from memory-mapped float16 features (what sharded extraction leaves), on CPU:
PRISM's ``redundancy_scores``, ScalSelect's ``leverage_scores`` and COINCIDE's spherical k-means (``KMEANS``: 1,000
clusters, 2 iterations — the memory of the full 10,000 × 20 run, a tenth of one iteration's search; the real run
belongs on a GPU), each in a fresh process reading the features with ``np.load(mmap_mode="r")``; its compute time
and peak RSS (``ru_maxrss``, which counts the mapped file's pages it touched) are recorded.

    make bench                       # 100,000 × 4,096 (0.8 GB of features)
    SELBENCH_BENCH_665K=1 .venv/bin/python -m pytest benchmarks/test_extraction_shards.py --benchmark-only -s
                                     # + 665,298 × 4,096 (5.4 GB, generated once in ~2 min; runs ~5 min)
    .venv/bin/python benchmarks/test_extraction_shards.py prism|scalselect|coincide ROWS   # one, as JSON
    .venv/bin/python benchmarks/test_extraction_shards.py generate ROWS PROCESSES # the features alone

Targets on 2 cores (issue #20): each ≤ 3 minutes with peak RSS ≤ 8 GB at 665K × 4096. The features are seeded
synthetic ones with the shape of real first-block outputs: a power-law spectrum over 256 directions (so ScalSelect's
90 %-energy rank is in the tens, not 1), isotropic noise and a shared offset; they live under
``$SELBENCH_BENCH_DIR`` (default ``.cache/bench``) and are reused while their shape matches.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SELBENCH_BENCH_DIR", REPO / ".cache" / "bench"))
D = 4096
SIZES = {"100k": 100_000, "665k": 665_298}
KMEANS = {"k": 1000, "niter": 2}  # COINCIDE's clustering, shortened: its memory does not depend on k or niter


def _write_rows(path: Path, lo: int, hi: int) -> None:
    """Rows lo..hi of the features file (its own seed per block of rows: the same bytes however it is split)."""
    n, d = np.load(path, mmap_mode="r").shape
    rng = np.random.default_rng(0)
    rank = 256
    basis = rng.normal(size=(rank, d)) / np.sqrt(d)
    scale = 4.0 / np.sqrt(np.arange(1, rank + 1))  # power-law spectrum
    offset = rng.normal(size=d) * 0.5
    out = np.load(path, mmap_mode="r+")
    for start in range(lo, hi, 8192):
        stop = min(hi, start + 8192)
        block = np.random.default_rng([1, start])
        x = (block.normal(size=(stop - start, rank)) * scale) @ basis + 0.05 * block.normal(size=(stop - start, d))
        out[start:stop] = (x + offset).astype(np.float16)
    out.flush()


def features_file(n: int, d: int = D, workers: int = 1) -> Path:
    """Seeded float16 features [n, d] as an .npy file, generated once (in ``workers`` processes)."""
    from concurrent.futures import ProcessPoolExecutor

    path = DATA / f"features-{n}x{d}-f16.npy"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, d)).flush()
    step = -(-n // (8192 * workers)) * 8192  # whole blocks of 8,192 rows per process
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_rows, [tmp] * workers, range(0, n, step), [min(n, lo + step) for lo in range(0, n, step)]))
    tmp.replace(path)
    return path


def measure(method: str, path: Path) -> dict:
    """In this process: the method on the memory-mapped features; seconds and peak RSS."""
    x = np.load(path, mmap_mode="r")
    t0 = time.perf_counter()
    if method == "prism":
        from selbench.selectors.prism import redundancy_scores

        out, extra = redundancy_scores(x, "row"), {}
    elif method == "coincide":
        from selbench.selectors.coincide import spherical_kmeans

        _, out = spherical_kmeans(x, KMEANS["k"], KMEANS["niter"], 0)
        extra = dict(KMEANS)
    else:
        from selbench.selectors.scalselect import leverage_scores

        out, k = leverage_scores(x, 0.9)
        extra = {"k": k}
    seconds = time.perf_counter() - t0
    assert out.shape == (len(x),) and np.isfinite(out).all()
    return {"method": method, "rows": len(x), "dim": x.shape[1], "seconds": round(seconds, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
            "threads": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count())), **extra}


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("method", ["prism", "scalselect", "coincide"])
def test_selection_math_memmap_fp16(benchmark, method: str, size: str) -> None:
    if size == "665k" and not os.environ.get("SELBENCH_BENCH_665K"):
        pytest.skip("set SELBENCH_BENCH_665K=1 for 665,298 × 4,096 (5.4 GB of features)")
    features_file(SIZES[size], workers=os.cpu_count() or 1)  # generated once, outside the timing
    result: dict = {}

    def run() -> None:  # a fresh process, so the peak RSS is this method's alone
        out = subprocess.run([sys.executable, __file__, method, str(SIZES[size])], check=True,
                             capture_output=True, text=True)
        result.update(json.loads(out.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1] == "generate":  # generate ROWS [WORKERS]
        print(features_file(int(sys.argv[2]), workers=int(sys.argv[3]) if len(sys.argv) > 3 else 1))
    else:
        print(json.dumps(measure(sys.argv[1], features_file(int(sys.argv[2])))))
