"""Shared fixtures: a small embedded world (built once per session, cached across sessions under .cache)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("SELBENCH_NO_PROGRESS", "1")
REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("SELBENCH_TEST_CACHE", REPO / ".cache" / "tests"))


@pytest.fixture(scope="session")
def small_world() -> Path:
    """400-sample pool, 40-item benchmarks, tiny models with a short stage 1: for selector/harness tests."""
    from selbench.embedded import STAGE1, build_world

    out = CACHE / "small-world-v1"
    return build_world(out, seed=3, n_samples=400, n_bench=40,
                       stage1=STAGE1.model_copy(update={"epochs": 1.0}), log=lambda m: None)


@pytest.fixture(scope="session")
def small_pool(small_world: Path):
    from selbench.pool.manifest import manifest_from_pool

    manifest, report = manifest_from_pool(small_world / "pool" / "pool.json")
    assert not report.issues
    return manifest
