import numpy as np
import torch

from selbench.models.chat import IMAGE, INSTRUCTION, TEMPLATE
from selbench.selectors.scalselect import kept_visual_tokens, leverage_scores, leverage_scores_svd


def test_gram_leverage_equals_full_svd() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 10)) @ rng.normal(size=(10, 32)) + 0.01 * rng.normal(size=(500, 32))
    fast, k1 = leverage_scores(x, 0.9)
    ref, k2 = leverage_scores_svd(x, 0.9)
    assert k1 == k2 and 1 <= k1 <= 10
    np.testing.assert_allclose(fast, ref, rtol=1e-7, atol=1e-10)
    assert abs(fast.sum() - k1) < 1e-6  # leverage scores of a rank-k projection sum to k


def test_tau_keeps_tokens_up_to_the_mass_inclusive() -> None:
    roles = torch.tensor([[TEMPLATE, IMAGE, IMAGE, IMAGE, IMAGE, INSTRUCTION, INSTRUCTION]])
    T = roles.shape[1]
    probs = torch.zeros(1, 2, T, T)
    # instruction rows (5, 6) attend to image tokens 1..4 with masses 0.5, 0.3, 0.15, 0.05 (summed over rows)
    for row in (5, 6):
        probs[0, :, row, 1:5] = torch.tensor([0.25, 0.15, 0.075, 0.025])
    keep = kept_visual_tokens(probs, roles, 0.8)  # 0.5 + 0.3 = 0.8 reaches τ exactly: keep two
    assert keep[0].tolist() == [False, True, True, False, False, False, False]
    keep = kept_visual_tokens(probs, roles, 0.81)  # the crossing token is kept
    assert keep[0].tolist()[1:5] == [True, True, True, False]
    keep = kept_visual_tokens(probs, roles, 1.0)
    assert keep[0].tolist()[1:5] == [True, True, True, True]
