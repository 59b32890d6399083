"""Report tables from a fixed small run: ARP/OSC checked against hand-computed values (frames.py's docstring),
N/A for a missing benchmark and a failed seed, and golden LaTeX / Markdown / CSV output.

Regenerate the golden files after an intended format change with ``SELBENCH_UPDATE_GOLDEN=1 pytest tests/reports``
and read the diff."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import pytest

from selbench.reports.export import latex_escape, markdown_escape, to_csv, to_latex, to_markdown
from selbench.reports.tables import (
    NA,
    all_tables,
    arp_table,
    benchmark_tables,
    from_frames,
    pools_table,
    time_table,
)
from tests.reports.frames import SPEC, frames

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def run(tmp_path):
    results, timings = frames()
    return from_frames(results, timings, SPEC, tmp_path)


def _cell(table, row_label, col):
    j = table.header.index(col)
    return next(r[j] for r in table.rows if r[0].text == row_label)


def test_per_seed_arp_and_osc_by_hand(run) -> None:
    b = run.board.set_index(["selector", "budget", "seed"])
    assert b.loc[("alpha", "10%", 0), "arp_v1"] == pytest.approx(90.0)
    assert b.loc[("alpha", "10%", 1), "arp_v1"] == pytest.approx(67.5)
    assert b.loc[("alpha", "10%", 1), "rel_emb_pope"] == pytest.approx(75.0)
    assert b.loc[("alpha", "10%", 0), "osc_v1"] == pytest.approx(0.15)
    assert b.loc[("alpha", "10%", 1), "osc_v1"] == pytest.approx(0.18)
    assert b.loc[("beta", "10%", 0), "arp_v1"] == pytest.approx(75.0)
    # a missing benchmark makes the cell's ARP N/A, never the mean of what is there
    assert pd.isna(b.loc[("beta", "10%", 1), "arp_v1"]) and b.loc[("beta", "10%", 1), "rel_emb_vqa"] == 100.0
    # a failed seed: no ARP, no OSC
    assert pd.isna(b.loc[("beta", "20%", 0), "arp_v1"]) and pd.isna(b.loc[("beta", "20%", 0), "osc_v1"])
    assert b.loc[("full", "100%", 0), "arp_v1"] == pytest.approx(100.0)


def test_arp_table_mean_std_na_and_best(run) -> None:
    t = arp_table(run)
    assert t.header == ["Selector", "10%", "20%"]
    a10 = _cell(t, "alpha", "10%")
    assert a10.value == pytest.approx(78.75) and a10.std == pytest.approx(22.5 / math.sqrt(2))
    assert a10.text == "78.8 ± 15.9"
    assert _cell(t, "alpha", "20%").text == "90.0 ± 0.0"
    b10, b20 = _cell(t, "beta", "10%"), _cell(t, "beta", "20%")
    assert b10.text == NA and "seed 1: missing benchmark or reference" in b10.note
    assert b20.text == NA and "out of memory" in b20.note
    # best per column among selectors: alpha in both (beta is N/A), never the reference row
    assert a10.best and _cell(t, "alpha", "20%").best and not _cell(t, "Full data (reference)", "10%").best


def test_benchmark_table_scaled_and_rel(run) -> None:
    t = benchmark_tables(run)[0]
    assert t.key == "benchmarks-10pct" and t.header == ["Method", "emb_vqa", "emb_pope", "Rel."]
    assert _cell(t, "Full data", "emb_vqa").text == "50.0"
    assert _cell(t, "alpha", "emb_pope").text == "70.0 ± 14.1"  # (80, 60) × 100
    assert _cell(t, "beta", "emb_pope").text == NA  # seed 1 has no POPE row
    assert _cell(t, "beta", "emb_vqa").best and _cell(t, "alpha", "Rel.").best


def test_time_table_osc(run) -> None:
    t = time_table(run)
    osc = _cell(t, "alpha @ 10%", "OSC")
    assert osc.value == pytest.approx(0.165) and osc.text == "0.16 ± 0.02"  # 0.165 is 0.16499… in binary
    assert _cell(t, "alpha @ 10%", "Feature extraction (s)").value == pytest.approx(2.5)
    assert _cell(t, "beta @ 10%", "OSC").value == pytest.approx(0.13) and _cell(t, "beta @ 10%", "OSC").best
    assert _cell(t, "beta @ 20%", "OSC").text == NA
    assert _cell(t, "Full data", "Fine-tuning (s)").value == 100.0


@pytest.mark.parametrize("key", ["arp", "benchmarks-10pct", "time"])
@pytest.mark.parametrize("writer,ext", [(to_latex, "tex"), (to_markdown, "md"), (to_csv, "csv")])
def test_golden(run, key, writer, ext) -> None:
    table = next(t for t in all_tables(run) if t.key == key)
    got = writer(table)
    path = GOLDEN / f"{key}.{ext}"
    if os.environ.get("SELBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(got)
    assert got == path.read_text(), f"{path} differs; see the module docstring to regenerate"


def test_hostile_labels_are_escaped(tmp_path) -> None:
    label = r"<script>alert(1)</script> a_b & 50% | $x$ #1 {y} ~\ ^*"
    results, timings = frames(alpha=label)
    run = from_frames(results, timings, SPEC, tmp_path)
    tex = to_latex(arp_table(run))
    assert latex_escape(label) in tex
    assert r"\textless{}script\textgreater{}alert(1)\textless{}/script\textgreater{} a\_b \& 50\% | \$x\$ \#1 " \
           r"\{y\} \textasciitilde{}\textbackslash{} \textasciicircum{}*" == latex_escape(label)
    md = to_markdown(arp_table(run))
    assert markdown_escape(label) in md and "<script>" not in md
    row = next(line for line in md.splitlines() if "alert" in line)
    assert row.count(" | ") == 2  # the label's own "|" is escaped, so the row still has three cells
    csv = to_csv(arp_table(run))
    assert pd.read_csv(__import__("io").StringIO(csv))["Selector"].tolist()[1] == label


def test_cross_pool_table(tmp_path) -> None:
    results, timings = frames()
    a = from_frames(results, timings, SPEC, tmp_path)
    other = {**SPEC, "name": "flan", "world": None, "pool": {"path": "/data/visionflan/annotation_191-task_1k.json"}}
    keep = results["selector"].isin(["full", "alpha"]) & (results["budget"].isin(["100%", "10%"]))
    b = from_frames(results[keep], timings[timings["selector"].isin(["full", "alpha"])
                                          & timings["budget"].isin(["100%", "10%"])], other, tmp_path)
    t = pools_table([a, b])
    assert t.header == ["Selector", "10%", "20%", "10%"]
    assert t.groups == [("", 1), ("embedded world (seed 0, 1,000 samples) (golden)", 2),
                        ("annotation_191-task_1k (flan)", 1)]
    assert [c.text for c in t.rows[1]] == ["beta", NA, NA, NA] and t.rows[1][3].note == "not in this run"
    assert t.rows[0][3].text == "78.8 ± 15.9" and t.rows[0][3].best
    got = to_markdown(t)
    path = GOLDEN / "arp-pools.md"
    if os.environ.get("SELBENCH_UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text()
