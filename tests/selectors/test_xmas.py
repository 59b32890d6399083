import numpy as np

from selbench.selectors.xmas import TEXT_ONLY, balanced_sample, checkpoint_steps, instability


def test_instability_is_total_variation() -> None:
    t = np.array([[1.0, 2.0, 1.5], [0.0, 0.0, 0.0]])
    assert instability(t).tolist() == [1.5, 0.0]


def test_checkpoints_evenly_spaced_and_end_at_the_last_step() -> None:
    assert checkpoint_steps(70, 7) == [10, 20, 30, 40, 50, 60, 70]
    assert checkpoint_steps(10, 7)[-1] == 10 and len(checkpoint_steps(10, 7)) == 7


def test_balanced_sampling_keeps_balance_and_carries_shortfall() -> None:
    # clusters of sizes 2, 10, 10 and a text-only cluster of 4; budget 16 → shares 4 each
    labels = np.array([0] * 2 + [1] * 10 + [2] * 10 + [TEXT_ONLY] * 4)
    instab = np.concatenate([np.arange(2.0), np.arange(10.0)[::-1], np.arange(10.0), [np.nan] * 4])
    picks = balanced_sample(labels, instab, 16, seed=0)
    assert len(picks) == len(set(picks.tolist())) == 16
    per = {c: int((labels[picks] == c).sum()) for c in (0, 1, 2, TEXT_ONLY)}
    # ascending size: cluster 0 (2) gives 2 of its 4 → the 2 left carry to the rest: 16-2=14 over 3 → 4, 5, 5
    assert per == {0: 2, TEXT_ONLY: 4, 1: 5, 2: 5}
    # within a cluster the most stable (lowest instability) are taken
    c1 = picks[labels[picks] == 1]
    assert sorted(instab[c1].tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert balanced_sample(labels, instab, 16, seed=0).tolist() == picks.tolist()
