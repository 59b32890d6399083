"""Confidence intervals for a run's leaderboard: the cells' per-item outcomes (``items.parquet``) through the paired
bootstrap (``statistics.bootstrap``) → one row per (selector, budget) with ARP and every column's relative
performance with their CIs, the rank range and tie group at its budget, and its ARP difference to random at the
same budget (CI and two-sided p-value).

Every cell and the full-data reference answer the same benchmark items, so one resample of items serves them all
(paired); cells with several seeds resample seeds too. What a report may claim follows from these: "A beats B"
only when the CI of their difference excludes 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from selbench.evaluators.protocols import Column
from selbench.leaderboard.frame import REFERENCE, SANITY
from selbench.leaderboard.statistics import ItemStats, SeedRuns, bootstrap

RANDOM = "random"  # the registry name of the baseline every difference is taken against


@dataclass(frozen=True)
class Intervals:
    cells: pd.DataFrame  # one row per (selector, budget): arp, arp_low/high, rel_<col>_low/high, rank_low/high,
    #                      tie_best, vs_random, vs_random_low/high, vs_random_p
    pairs: pd.DataFrame  # every pair of cells at one budget: difference (a − b) with its CI and p-value
    replicates: int
    seed: int
    confidence: float
    random_label: str | None

    def cell(self, selector: str, budget: str) -> pd.Series | None:
        """The row of one (selector, budget) cell, if it took part."""
        hit = self.cells[(self.cells["selector"] == selector) & (self.cells["budget"] == budget)]
        return hit.iloc[0] if len(hit) else None

    def info(self) -> dict:
        return {"replicates": self.replicates, "seed": self.seed, "confidence": self.confidence,
                "method": "paired percentile bootstrap over benchmark items (and seeds, where a cell has several)",
                "random": self.random_label}


def seed_outcomes(items: pd.DataFrame) -> dict[tuple[str, str], dict[int, dict[str, ItemStats]]]:
    """items.parquet (selector, budget, seed, benchmark, item, kind, stats) → per (selector, budget), per seed, the
    ItemStats by benchmark."""
    cells: dict[tuple[str, str], dict[int, dict[str, ItemStats]]] = {}
    for (sel, budget, seed, bench), g in items.groupby(["selector", "budget", "seed", "benchmark"], sort=False):
        kinds = set(g["kind"])
        if len(kinds) != 1:
            raise ValueError(f"{sel} @ {budget} seed {seed}: benchmark {bench} has mixed outcome kinds {kinds}")
        stats = np.array([np.asarray(s, dtype=np.float64) for s in g["stats"]])
        cells.setdefault((sel, budget), {}).setdefault(int(seed), {})[bench] = ItemStats(
            kinds.pop(), tuple(str(i) for i in g["item"]), stats)
    return cells


def seed_runs(items: pd.DataFrame) -> tuple[dict[tuple[str, str], list[dict[str, ItemStats]]], list[dict]]:
    """Per (selector, budget) the seeds' ItemStats by benchmark (in seed order), and the reference's."""
    runs = {k: [by_seed[s] for s in sorted(by_seed)] for k, by_seed in seed_outcomes(items).items()}
    reference = next((v for k, v in runs.items() if k[0] == REFERENCE), [])
    return {k: v for k, v in runs.items() if k[0] != REFERENCE}, reference


def intervals(board: pd.DataFrame, items: pd.DataFrame, columns: Sequence[Column], *, random_label: str | None,
              replicates: int = 1000, seed: int = 0, confidence: float = 0.95) -> Intervals | None:
    """None when the run kept no per-item outcomes (an older store) or has no reference outcomes."""
    if items is None or items.empty or board.empty:
        return None
    outcomes = seed_outcomes(items)
    listed = {(str(k[0]), str(k[1])): sorted({int(s) for s in g})
              for k, g in board.groupby(["selector", "budget"], sort=False)["seed"]}

    def complete(key: tuple[str, str]) -> SeedRuns:
        """The cell's seeds in order — all the board lists, or none: a cell with a failed seed is N/A here as in the
        ARP table, never the mean of the seeds that finished."""
        got, want = outcomes.get(key, {}), listed.get(key, [])
        return [got[s] for s in want] if want and all(s in got for s in want) else []

    reference = next((complete(k) for k in listed if k[0] == REFERENCE), [])
    if not reference:
        return None
    order = [k for k in listed if k[0] != REFERENCE]
    # every done or failed cell of the board takes part; one without outcomes is N/A, never dropped silently
    cells: dict[tuple[str, str], SeedRuns] = {k: complete(k) for k in order}
    result = bootstrap(cells, reference, columns, replicates=replicates, seed=seed, confidence=confidence,
                       unranked=SANITY)
    vs = []
    for key in order:
        row: dict = {"selector": key[0], "budget": key[1], "vs_random": None, "vs_random_low": None,
                     "vs_random_high": None, "vs_random_p": None}
        rand = (random_label, key[1])
        if random_label is not None and rand in result.cells and key != rand:
            p = result.pair(key, rand)
            row.update(vs_random=p.difference.point, vs_random_low=p.difference.low,
                       vs_random_high=p.difference.high, vs_random_p=p.p_value)
        vs.append(row)
    frame = result.cells_frame().merge(pd.DataFrame(vs), on=["selector", "budget"], how="left", validate="1:1")
    return Intervals(frame, result.pairs_frame(), replicates, seed, confidence, random_label)
