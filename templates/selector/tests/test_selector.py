"""The template's own tests: the selection contract, determinism per seed, and balance across task types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from balanced_selector import BalancedConfig, BalancedSelector


class Pool:  # the part of selbench's Manifest this selector reads
    def __init__(self, skills: list[str]):
        self.frame = pd.DataFrame({"skill": skills})

    def __len__(self) -> int:
        return len(self.frame)


POOL = Pool(["caption"] * 50 + ["vqa"] * 30 + ["mc"] * 5)


@pytest.fixture
def artifacts():
    return BalancedSelector(BalancedConfig()).score(POOL, ctx=None)


@pytest.mark.parametrize("budget", [1, 7, 40, 85])
def test_contract(artifacts, budget) -> None:
    idx = BalancedSelector(BalancedConfig()).select(artifacts, budget, seed=0)
    assert len(idx) == budget and len(set(idx.tolist())) == budget and idx.min() >= 0 and idx.max() < 85


def test_same_seed_same_subset_other_seed_other_subset(artifacts) -> None:
    sel = BalancedSelector(BalancedConfig())
    assert np.array_equal(sel.select(artifacts, 30, 1), sel.select(artifacts, 30, 1))
    assert not np.array_equal(np.sort(sel.select(artifacts, 30, 1)), np.sort(sel.select(artifacts, 30, 2)))


def test_balanced_with_small_groups_capped(artifacts) -> None:
    idx = BalancedSelector(BalancedConfig()).select(artifacts, 40, seed=0)
    counts = pd.Series(POOL.frame["skill"].to_numpy()[idx]).value_counts().to_dict()
    assert counts == {"caption": 18, "vqa": 17, "mc": 5}  # mc is capped at its 5; the rest split the remainder
