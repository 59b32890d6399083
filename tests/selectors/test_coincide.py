import numpy as np
import torch

from selbench.models.chat import ANSWER, IMAGE, INSTRUCTION, TEMPLATE
from selbench.selectors.coincide import (
    CoincideSelector,
    allocate,
    coincide_features,
    gaussian_kernel,
    mmd_prototypes,
    mmd_prototypes_naive,
    text_after_image,
    transferability,
)


def test_linear_mmd_step_picks_the_naive_prototypes() -> None:
    rng = np.random.default_rng(0)
    for _trial in range(5):
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


def _part(h: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tanh(h.mean(0)), dim=-1)


def test_text_part_averages_only_the_tokens_after_the_image() -> None:
    P = -1  # padding
    roles = torch.tensor([
        [TEMPLATE, TEMPLATE, IMAGE, IMAGE, IMAGE, TEMPLATE, INSTRUCTION, INSTRUCTION, ANSWER, P],  # image row
        [TEMPLATE, INSTRUCTION, INSTRUCTION, TEMPLATE, ANSWER, ANSWER, P, P, P, P],  # text-only row
    ])
    h = torch.randn(2, 10, 8)
    h[0, :2] = 50.0  # the template before the image would dominate any average that included it
    h[roles < 0] = -50.0  # so would padding
    x = coincide_features({0: h}, roles, [0])  # one layer: [visual (8) | text (8)] / √2
    torch.testing.assert_close(x[0, 8:] * np.sqrt(2), _part(h[0, 5:9]))
    torch.testing.assert_close(x[0, :8] * np.sqrt(2), _part(h[0, 2:5]))
    # a row without an image: zero visual part, text part over all its tokens
    torch.testing.assert_close(x[1, :8], torch.zeros(8))
    torch.testing.assert_close(x[1, 8:] * np.sqrt(2), _part(h[1, :6]))
    assert CoincideSelector.revision == 2


def test_text_after_image_on_the_tokenised_input(small_world, small_pool) -> None:
    """On the real template, the text part starts right after the image and keeps every later token."""
    from selbench.models import tiny
    from selbench.models.data import Collator
    from selbench.pool.manifest import examples

    _, processor = tiny.load(small_world / "models" / "proxy")
    has = small_pool.has_image.to_numpy()
    rows = [int(np.flatnonzero(has)[0]), int(np.flatnonzero(~has)[0])]  # an image row, a text-only row
    batch = Collator(processor, 16)(examples(small_pool, rows))
    mask = text_after_image(batch.roles)
    roles = batch.roles[0]
    first_img, last_img = [int(i) for i in torch.nonzero(roles == IMAGE).flatten()[[0, -1]]]
    assert first_img > 0 and (roles[:first_img] == TEMPLATE).all()  # "USER: " comes before the image ...
    assert not mask[0, :last_img + 1].any()  # ... and is left out, as the image is
    assert mask[0, last_img + 1:].tolist() == (roles[last_img + 1:] >= 0).tolist()
    assert mask[1].tolist() == (batch.roles[1] >= 0).tolist()
