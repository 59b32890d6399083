import numpy as np
import pytest

from selbench.selectors.prism import PrismConfig, PrismSelector, redundancy_scores, redundancy_scores_pairwise


@pytest.mark.parametrize("centering", ["row", "corpus"])
def test_linear_identity_equals_pairwise_definition(centering: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 24)) + rng.normal(size=24)  # a shared offset, as real features have
    fast = redundancy_scores(x, centering)
    slow = redundancy_scores_pairwise(x, centering)
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)
    # the pairwise definition itself, with numpy's Pearson (row centring)
    if centering == "row":
        rho = np.corrcoef(x)
        np.fill_diagonal(rho, 0)
        np.testing.assert_allclose(slow, rho.sum(1) / (len(x) - 1), atol=1e-12)


def test_unnormalised_corpus_centring_is_the_trap() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 8)) * rng.uniform(0.1, 5, size=(100, 1))
    xc = x - x.mean(0)
    assert np.allclose(xc @ xc.sum(0), 0)  # un-normalised sums vanish for every row
    assert np.ptp(redundancy_scores(x, "corpus")) > 0.01  # the normalised identity does not


def test_select_keeps_text_rows_then_least_redundant() -> None:
    sel = PrismSelector(PrismConfig())
    red = np.array([0.5, np.nan, 0.1, 0.9, np.nan, 0.2])
    art = {"n": np.array(6), "redundancy": red}
    assert sorted(sel.select(art, 4, 0).tolist()) == [1, 2, 4, 5]
    assert sorted(sel.select(art, 2, 0).tolist()) == [1, 4]
    one = sel.select(art, 1, 3)
    assert one.tolist()[0] in (1, 4) and sel.select(art, 1, 3).tolist() == one.tolist()
