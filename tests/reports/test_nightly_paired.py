"""The nightly comparison on item outcomes: a one-seed regression on 5 % of one benchmark's items is found by the
paired bootstrap (it is far below the old 5-point tolerance), and a same-code re-run (identical answers) is not."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from selbench.evaluators.protocols import columns_for
from selbench.leaderboard import leaderboard
from selbench.reports.nightly import Thresholds, night_files, record
from tests.reports.test_uncertainty import run_frames

COLUMNS = columns_for(None, ["emb_vqa", "emb_pope"])


def flip(items: pd.DataFrame, results: pd.DataFrame, selector: str, share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`share` of the selector's right emb_vqa answers become wrong (items and the result row alike)."""
    items, results = items.copy(), results.copy()
    rows = items.index[(items["selector"] == selector) & (items["benchmark"] == "emb_vqa")]
    right = [i for i in rows if items.at[i, "stats"][0] == 1.0]
    for i in right[: int(share * len(rows))]:
        items.at[i, "stats"] = [0.0, 1.0]
    acc = float(np.mean([s[0] for s in items.loc[rows, "stats"]]))
    results.loc[(results["selector"] == selector) & (results["benchmark"] == "emb_vqa"), "value"] = acc
    return items, results


def night(history: Path, results, timings, items, day: int):
    board = leaderboard(results, timings, COLUMNS)
    return record(history, board, "ci", "spec", "abc", Thresholds(), dt.datetime(2026, 11, day, tzinfo=dt.UTC),
                  [c.key for c in COLUMNS], items, COLUMNS)


def test_paired_nightly_finds_a_small_regression_and_ignores_a_rerun(tmp_path: Path) -> None:
    results, timings, items = run_frames()
    first = night(tmp_path, results, timings, items, 1)
    assert first.changes == []
    worse_items, worse_results = flip(items, results, "good", 0.05)  # 20 of 400 items: a few ARP points
    second = night(tmp_path, worse_results, timings, worse_items, 2)
    assert [(c.selector, c.kind, c.metric) for c in second.changes] == [("good", "regression", "arp_v1")]
    change = second.changes[0]
    assert -5.0 < change.delta < 0 and "paired bootstrap" in change.detail  # below the old ±5 tolerance
    third = night(tmp_path, worse_results, timings, worse_items, 3)  # the same code again: identical answers
    assert third.changes == []
    # identical answers: the third night's item outcomes are the second's file, not another copy of it
    assert night_files(tmp_path, third.night)["items"] == f"nights/{second.night}/items.parquet"
    assert not (tmp_path / "nights" / third.night / "items.parquet").exists()


def test_a_night_whose_outcomes_changed_layout_falls_back_to_the_seed_rule(tmp_path: Path) -> None:
    """lmms-eval's POPE tasks moved from POPE's rule ([tp, fp, fn, tn]) to lmms-eval's ([tp, fp, fn, correct, gold
    yes, 1]): outcomes of two layouts cannot be paired, so the night is recorded and compared without them."""
    results, timings, items = run_frames()
    night(tmp_path, results, timings, items, 1)
    relaid = items.copy()
    pope = relaid["benchmark"] == "emb_pope"
    relaid.loc[pope, "kind"] = "pope_lmms"
    relaid.loc[pope, "stats"] = pd.Series([[tp, fp, fn, tp + tn, tp + fn, 1.0] for tp, fp, fn, tn in
                                           relaid.loc[pope, "stats"]], index=relaid.index[pope], dtype=object)
    worse_items, worse_results = flip(relaid, results, "good", 0.05)
    second = night(tmp_path, worse_results, timings, worse_items, 2)  # used to raise: "… has pope_lmms statistics"
    assert all("paired bootstrap" not in c.detail for c in second.changes)  # one seed: the ARP tolerance decides
    assert "items" in night_files(tmp_path, second.night)  # recorded, so the next night compares with this one
