import numpy as np

from selbench.selectors.coincide import (
    allocate, gaussian_kernel, mmd_prototypes, mmd_prototypes_naive, transferability,
)


def test_linear_mmd_step_picks_the_naive_prototypes() -> None:
    rng = np.random.default_rng(0)
    for trial in range(5):
        x = rng.normal(size=(40, 6))
        k = gaussian_kernel(x, x, 1.0)
        assert mmd_prototypes(k, 12).tolist() == mmd_prototypes_naive(k, 12).tolist()


def test_allocation_meets_budget_and_respects_sizes() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        sizes = rng.integers(1, 30, size=12)
        w = rng.dirichlet(np.ones(12))
        budget = int(rng.integers(1, sizes.sum() + 1))
        counts = allocate(w, sizes, budget)
        assert counts.sum() == budget and (counts <= sizes).all() and (counts >= 0).all()


def test_transferability_masks_near_duplicates() -> None:
    c = np.array([[0, 0, 1, 0], [0, 0, 1, 0.01], [0, 0, 0, 1]], dtype=float)
    t = transferability(c, 0.9)
    # centroid 0's only un-masked partner is centroid 2 (cosine ~0); 1 and 0 are > 0.9 similar
    assert abs(t[0]) < 0.02 and abs(t[2] - (0.01 / np.sqrt(1.0001)) / 2) < 1e-3
