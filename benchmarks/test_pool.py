"""Pool preparation at scale: `pool check` (manifest_from_pool + save_manifest) cold and warm, 1 and 2 workers.

    make bench                                               # the 10,000-row / 8,000-JPEG (320×240) pool
    SELBENCH_BENCH_665K=1 .venv/bin/python -m pytest benchmarks/test_pool.py --benchmark-only -s
                                                             # + the LLaVA-665K-shaped pool (~6 min to generate
                                                             #   once, ~1.4 GB under the bench dir; runs ~6 min)

Each run is a subprocess (``benchmarks/llava665k_shape.py check``), so its peak RSS is its own (VmHWM; the
image/parse workers' peak, ``ru_maxrss`` of its children, separately). Cold = empty caches (the OS page cache
stays warm: these machines cannot drop it); warm = the same cache folder again (image checks + parsed rows),
i.e. a re-check of an unchanged pool. Data lives under ``$SELBENCH_BENCH_DIR`` (default
``.cache/bench``) and is generated once (seeded, reused while its parameters match).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "llava665k_shape.py"
DATA = Path(os.environ.get("SELBENCH_BENCH_DIR", REPO / ".cache" / "bench"))
POOLS = {
    "10k": {"rows": 10_000, "unique_images": 8_000, "size": "320x240"},
    "665k": {"rows": 665_298, "unique_images": None, "size": "32x32"},
}
RESULTS: dict[tuple[str, str, int], dict] = {}


def _pool(name: str) -> Path:
    if name == "665k" and not os.environ.get("SELBENCH_BENCH_665K"):
        pytest.skip("set SELBENCH_BENCH_665K=1 for the LLaVA-665K-shaped pool (slow)")
    p = POOLS[name]
    out = DATA / f"pool-{name}"
    args = [sys.executable, str(SCRIPT), "generate", str(out), "--rows", str(p["rows"]), "--size", p["size"]]
    if p["unique_images"]:
        args += ["--unique-images", str(p["unique_images"])]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return out


def _check(root: Path, workers: int, cache: Path, manifest: Path) -> dict:
    r = subprocess.run([sys.executable, str(SCRIPT), "check", str(root / "pool.json"), "--images", str(root),
                        "--workers", str(workers), "--cache", str(cache), "--manifest", str(manifest)],
                       check=True, capture_output=True, text=True, env={**os.environ, "SELBENCH_NO_PROGRESS": "1"})
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["10k", "665k"])
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("state", ["cold", "warm"])
def test_pool_check(benchmark, tmp_path: Path, name: str, workers: int, state: str) -> None:
    root = _pool(name)
    cache = tmp_path / "cache"  # image checks + parsed rows (an Arrow file ~ the pool's JSON size: removed below)
    if state == "warm":
        _check(root, workers, cache, tmp_path / "first.parquet")
    out: dict = {}

    def setup() -> None:
        if state == "cold":
            shutil.rmtree(cache, ignore_errors=True)

    def run() -> None:
        out.update(_check(root, workers, cache, tmp_path / "m.parquet"))

    benchmark.pedantic(run, setup=setup, rounds=1, iterations=1)
    shutil.rmtree(cache, ignore_errors=True)
    benchmark.extra_info.update({k: out[k] for k in ("wall_s", "rows_per_s", "peak_rss_mb", "workers_peak_rss_mb",
                                                      "main_cpu_s", "save_s")})
    benchmark.extra_info["stats"] = out["stats"]
    print(f"\n{name} {state} workers={workers}: {json.dumps(out)}")
    warm = state == "warm"
    assert out["issues"] == 0 and out["stats"]["rows_cached"] == warm
    assert out["stats"]["images_cached"] == (out["stats"]["unique_images"] if warm else 0)
    # determinism: every configuration gives the same fingerprint and the same manifest bytes
    RESULTS[(name, state, workers)] = {"fingerprint": out["fingerprint"],
                                       "manifest": hashlib.sha256((tmp_path / "m.parquet").read_bytes()).hexdigest()}
    same = [v for (n, _, _), v in RESULTS.items() if n == name]
    assert all(v == same[0] for v in same)
    if name == "665k":
        assert out["peak_rss_mb"] <= 2048
