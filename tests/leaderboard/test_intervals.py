"""The run's intervals take a cell only with every seed the leaderboard lists: a cell with a failed seed is N/A in the
uncertainty table as in the ARP table, never the mean of the seeds that finished (and nothing is compared with it)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from selbench.evaluators.protocols import Column, Source
from selbench.leaderboard.intervals import intervals

COLUMNS = [Column("vqa", "VQA", (Source("emb_vqa", "exact_match"),))]
N = 400


def frames(failed: tuple[str, int] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(1)
    board, items = [], []
    for sel, budget, seeds, p in (("full", "100%", (0,), 0.6), ("random", "10%", (0, 1, 2), 0.45),
                                  ("good", "10%", (0, 1, 2), 0.58)):
        for seed in seeds:
            lost = failed == (sel, seed)
            board.append({"selector": sel, "budget": budget, "seed": seed, "status": "failed" if lost else "done",
                          "reason": "out of memory" if lost else None})
            if not lost:  # a failed evaluation leaves no per-item outcomes
                correct = (rng.random(N) < p).astype(float)
                items += [{"selector": sel, "budget": budget, "seed": seed, "benchmark": "emb_vqa", "item": str(i),
                           "kind": "mean", "stats": [c, 1.0]} for i, c in enumerate(correct)]
    return pd.DataFrame(board), pd.DataFrame(items)


def cell(ci, selector: str) -> pd.Series:
    row = ci.cell(selector, "10%")
    assert row is not None
    return row


def test_a_cell_with_a_failed_seed_is_na_and_not_ranked() -> None:
    ci = intervals(*frames(("good", 2)), COLUMNS, random_label="random", replicates=200)
    good, random = cell(ci, "good"), cell(ci, "random")
    assert good["n_seeds"] == 0 and (good["arp"] is None or math.isnan(good["arp"]))
    assert good["vs_random"] is None and not good["tie_best"]
    assert random["n_seeds"] == 3 and random["tie_best"] and random["rank_low"] == random["rank_high"] == 1
    # with every seed, "good" is ranked, leads, and differs from random
    full = intervals(*frames(None), COLUMNS, random_label="random", replicates=200)
    assert cell(full, "good")["n_seeds"] == 3 and cell(full, "good")["vs_random"] == pytest.approx(
        cell(full, "good")["arp"] - cell(full, "random")["arp"])


def test_no_difference_to_a_random_cell_with_a_failed_seed() -> None:
    ci = intervals(*frames(("random", 1)), COLUMNS, random_label="random", replicates=200)
    assert cell(ci, "random")["n_seeds"] == 0
    assert cell(ci, "good")["n_seeds"] == 3 and cell(ci, "good")["vs_random"] is None


def test_a_reference_without_outcomes_gives_no_intervals() -> None:
    assert intervals(*frames(("full", 0)), COLUMNS, random_label="random", replicates=200) is None
