"""Selection math at N = 10k and 100k on CPU, each against its naive formulation in the same run.

    make bench      (or: .venv/bin/python -m pytest benchmarks --benchmark-only)

The naive O(N²) forms run only at 10k (at 100k they need 80 GB for the N × N matrix)."""

from __future__ import annotations

import numpy as np
import pytest

from selbench.selectors.coincide import gaussian_kernel, mmd_prototypes, mmd_prototypes_naive, spherical_kmeans
from selbench.selectors.prism import redundancy_scores, redundancy_scores_pairwise
from selbench.selectors.scalselect import leverage_scores, leverage_scores_svd

D = 256


def _x(n: int, d: int = D, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 32)) @ rng.normal(size=(32, d)) + 0.1 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("n", [10_000, 100_000])
def test_prism_linear(benchmark, n):
    benchmark(redundancy_scores, _x(n))


def test_prism_pairwise_10k(benchmark):
    benchmark.pedantic(redundancy_scores_pairwise, args=(_x(10_000),), rounds=1, iterations=1)


@pytest.mark.parametrize("n", [10_000, 100_000])
def test_scalselect_gram(benchmark, n):
    benchmark(leverage_scores, _x(n))


def test_scalselect_full_svd_10k(benchmark):
    benchmark.pedantic(leverage_scores_svd, args=(_x(10_000),), rounds=1, iterations=1)


@pytest.mark.parametrize("n", [10_000, 100_000])
def test_xmas_trajectory_kmeans(benchmark, n):
    import faiss

    traj = np.random.default_rng(0).normal(size=(n, 7)).astype(np.float32)
    k = max(2, round(1000 * n / 665_298))

    def run():
        km = faiss.Kmeans(7, k, niter=25, seed=0, verbose=False)
        km.train(traj)

    benchmark.pedantic(run, rounds=2, iterations=1)


@pytest.mark.parametrize("n", [10_000, 100_000])
def test_coincide_spherical_kmeans(benchmark, n):
    x = _x(n)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    k = max(2, round(10_000 * n / 665_298))
    benchmark.pedantic(spherical_kmeans, args=(x, k, 50, 0), rounds=1, iterations=1)


@pytest.mark.parametrize("impl", ["linear", "naive"])
def test_coincide_mmd_prototypes(benchmark, impl):
    x = _x(300, 32)
    kern = gaussian_kernel(x.astype(np.float64), x.astype(np.float64), 1.0)
    fn = mmd_prototypes if impl == "linear" else mmd_prototypes_naive
    benchmark.pedantic(fn, args=(kern, 60), rounds=1, iterations=1)
