"""The report's uncertainty: per-item outcomes → bootstrap CIs in the ARP table, tie groups in bold, a mark where a
cell differs from random, the significance table, CSV bounds and p-values, and the two-decimal option."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from selbench.cli import app
from selbench.reports.export import to_csv
from selbench.reports.tables import SIGNIFICANT, arp_table, benchmark_tables, from_frames, significance_table

N = 400
SPEC = {"name": "ci", "benchmarks": ["emb_vqa", "emb_pope"], "world": {"seed": 0, "samples": 1000, "out": "w"},
        "selectors": [{"name": "random"}, {"name": "length", "label": "good"}, {"name": "perplexity", "label": "same"}],
        "statistics": {"replicates": 400, "seed": 0, "confidence": 0.95}}


def run_frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Reference 70 % exact match; random 50 %; 'good' 65 % (clearly above random); 'same' = random's answers."""
    rng = np.random.default_rng(0)
    gold_yes = rng.random(N) < 0.5
    correct = {"full": rng.random(N) < 0.70, "random": rng.random(N) < 0.50}
    correct["good"] = correct["random"] | (rng.random(N) < 0.30)
    correct["same"] = correct["random"].copy()
    items, results, timings = [], [], []
    for sel, c in correct.items():
        budget = "100%" if sel == "full" else "10%"
        pred_yes = np.where(c, gold_yes, ~gold_yes)
        pope = np.stack([pred_yes & gold_yes, pred_yes & ~gold_yes, ~pred_yes & gold_yes, ~pred_yes & ~gold_yes], 1)
        for i in range(N):
            items.append({"selector": sel, "budget": budget, "seed": 0, "benchmark": "emb_vqa", "item": str(i),
                          "kind": "mean", "stats": [float(c[i]), 1.0]})
            items.append({"selector": sel, "budget": budget, "seed": 0, "benchmark": "emb_pope", "item": str(i),
                          "kind": "pope", "stats": pope[i].astype(float).tolist()})
        tp, fp, fn = pope[:, 0].sum(), pope[:, 1].sum(), pope[:, 2].sum()
        for bench, metric, value in (("emb_vqa", "exact_match", c.mean()), ("emb_pope", "f1", 2 * tp / (2 * tp + fp + fn))):
            results.append({"selector": sel, "budget": budget, "seed": 0, "benchmark": bench, "metric": metric,
                            "value": float(value), "primary": True})
        timings.append({"selector": sel, "budget": budget, "seed": 0, "status": "done", "reason": None,
                        "selection_s": None if sel == "full" else 1.0, "finetune_s": 10.0})
    return pd.DataFrame(results), pd.DataFrame(timings), pd.DataFrame(items)


def test_arp_table_shows_cis_tie_groups_and_differences_to_random(tmp_path: Path) -> None:
    results, timings, items = run_frames()
    run = from_frames(results, timings, SPEC, tmp_path, items)
    assert run.intervals is not None and run.intervals.replicates == 400
    table = arp_table(run)
    cells = {r[0].text: r[1] for r in table.rows}
    good, same, rand = cells["good"], cells["same"], cells["Random"]  # random prints as Random
    assert good.low is not None and good.low < good.value < good.high and "[" in good.text
    assert good.text.endswith(SIGNIFICANT) and not same.text.endswith(SIGNIFICANT)
    assert good.best and not rand.best  # 'good' alone is the best's tie group
    assert same.value == rand.value  # identical answers, identical ARP
    assert "paired bootstrap" in table.caption and "400 replicates" in table.caption
    # the ARP point estimate equals the leaderboard's, which the bootstrap recomputes from the items
    board = run.board.set_index("selector")
    assert good.value == board.loc["good", "arp_v1"]
    sig = significance_table(run)
    assert sig is not None
    row = next(r for r in sig.rows if r[1].text == "same")
    assert row[3].text.startswith("+0.0 [+0.0, +0.0]") and row[4].value == 1.0  # identical: degenerate, p = 1
    rows = list(csv.reader(io.StringIO(to_csv(table))))
    assert rows[0] == ["Selector", "10%", "10% low", "10% high"]


def test_without_any_ci_at_a_budget_the_best_point_value_is_bold_and_the_caption_says_so(tmp_path: Path) -> None:
    """A column without per-item outcomes (MMBench's, OCRBench's, a judge's) leaves every cell without a CI: the
    tables still mark the best, by its point value, and say that they do."""
    results, timings, items = run_frames()
    run = from_frames(results, timings, SPEC, tmp_path, items[items["benchmark"] != "emb_pope"])
    assert run.intervals is not None
    table = arp_table(run)
    cells = {r[0].text: r[1] for r in table.rows}
    assert all(c.low is None for c in cells.values())
    assert cells["good"].best and not cells["Random"].best and not cells["same"].best
    assert "at 10%, where no cell has a CI" in table.caption and "bold marks the best ARP" in table.caption
    bench = benchmark_tables(run)[0]
    rel = {r[0].text: r[-1] for r in bench.rows}
    assert rel["good"].best and not rel["Random"].best and "Rel.: where no cell has a CI" in bench.caption
    # with every column's outcomes the tie group decides, and the caption does not claim the fallback
    full = from_frames(results, timings, SPEC, tmp_path, items)
    assert "where no cell has a CI" not in arp_table(full).caption + benchmark_tables(full)[0].caption


def test_report_two_decimals_and_intervals_json(tmp_path: Path) -> None:
    results, timings, items = run_frames()
    run_dir = tmp_path / "ci"
    run_dir.mkdir()
    results.to_parquet(run_dir / "results.parquet")
    timings.to_parquet(run_dir / "timings.parquet")
    items.to_parquet(run_dir / "items.parquet")
    (run_dir / "spec.json").write_text(json.dumps(SPEC))
    out = CliRunner().invoke(app, ["report", str(run_dir), "--format", "md", "--format", "csv", "--decimals", "2"])
    assert out.exit_code == 0, out.output
    md = (run_dir / "report" / "tables" / "arp.md").read_text()
    good = next(line for line in md.splitlines() if line.startswith("| good"))
    assert re.search(r"\*\*\d+\.\d\d \\\[\d+\.\d\d, \d+\.\d\d\\\]", good), good  # two decimals
    doc = json.loads((run_dir / "report" / "tables" / "intervals.json").read_text())
    assert doc["statistics"]["replicates"] == 400 and doc["statistics"]["random"] == "random"
    assert {c["selector"] for c in doc["cells"]} == {"random", "good", "same"} and doc["pairs"]
