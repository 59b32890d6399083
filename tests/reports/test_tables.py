"""Report tables from a fixed small run: ARP/OSC checked against hand-computed values (frames.py's docstring),
N/A for a missing benchmark and a failed seed, #Samples per budget, display names, and golden LaTeX / Markdown /
CSV output.

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


def _cell(table, row_label, col, budget=None):
    j = table.header.index(col)
    return next(r[j] for r in table.rows if r[0].text == row_label and (budget is None or r[1].text == budget))


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
    assert [c.text for c in t.rows[0]] == ["#Samples", "100", "200"] and t.split == 2  # of the 1,000-sample world
    a10 = _cell(t, "alpha", "10%")
    assert a10.value == pytest.approx(78.75) and a10.std == pytest.approx(22.5 / math.sqrt(2))
    assert a10.text == "78.8 ± 15.9"
    assert _cell(t, "alpha", "20%").text == "90.0 ± 0.0"
    b10, b20 = _cell(t, "beta", "10%"), _cell(t, "beta", "20%")
    assert b10.text == NA and "seed 1: missing benchmark or reference" in b10.note
    assert b20.text == NA and "out of memory" in b20.note
    # best per column among selectors: alpha in both (beta is N/A), never the reference row
    assert a10.best and _cell(t, "alpha", "20%").best and not _cell(t, "Full data", "10%").best
    assert not _cell(t, "#Samples", "20%").best


def test_benchmark_table_scaled_and_rel(run) -> None:
    t = benchmark_tables(run)[0]
    assert t.key == "benchmarks-10pct" and t.header == ["Method", "#Samples", "VQA", "POPE", "Rel."]
    assert _cell(t, "Full data", "VQA").text == "50.0" and _cell(t, "Full data", "#Samples").text == "1,000"
    assert _cell(t, "alpha", "POPE").text == "70.0 ± 14.1"  # (80, 60) × 100
    assert _cell(t, "beta", "POPE").text == NA  # seed 1 has no POPE row
    assert _cell(t, "beta", "VQA").best and _cell(t, "alpha", "Rel.").best
    assert _cell(t, "alpha", "#Samples").value == 100 and not _cell(t, "alpha", "#Samples").best


def test_time_table_osc(run) -> None:
    t = time_table(run)
    osc = _cell(t, "alpha", "OSC", "10%")
    assert osc.value == pytest.approx(0.165) and osc.text == "0.16 ± 0.02"  # 0.165 is 0.16499… in binary
    extraction = _cell(t, "alpha", "Extraction", "10%")
    assert extraction.value == pytest.approx(2.5) and extraction.text == "2.5" and extraction.std is not None
    assert _cell(t, "beta", "OSC", "10%").value == pytest.approx(0.13) and _cell(t, "beta", "OSC", "10%").best
    assert _cell(t, "beta", "OSC", "20%").text == NA
    assert _cell(t, "Full data", "Fine-tune").value == 100.0 and _cell(t, "alpha", "#Samples", "20%").text == "200"
    # one device for every cell: named in the caption, not a column of its own
    assert "Device" not in t.header and "Measured on cpu (x86_64, 2 cores)." in t.caption


@pytest.mark.parametrize("key", ["arp", "benchmarks-10pct", "time", "lineage"])
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
    assert pd.read_csv(__import__("io").StringIO(csv))["Selector"].tolist()[2] == label  # after #Samples, Full data


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
    assert [c.text for c in t.rows[0]] == ["#Samples", "100", "200", "—"]  # the flan spec records no pool size
    assert [c.text for c in t.rows[2]] == ["beta", NA, NA, NA] and t.rows[2][3].note == "not in this run"
    assert t.rows[1][3].text == "78.8 ± 15.9" and t.rows[1][3].best
    got = to_markdown(t)
    path = GOLDEN / "arp-pools.md"
    if os.environ.get("SELBENCH_UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text()


def test_display_names_defaults_overrides_and_clashes(tmp_path) -> None:
    results, timings = frames()
    results = results.replace({"selector": {"alpha": "random", "beta": "xmas"}})
    timings = timings.replace({"selector": {"alpha": "random", "beta": "xmas"}})
    spec = {**SPEC, "selectors": [{"name": "random"}, {"name": "xmas"}]}
    run = from_frames(results, timings, spec, tmp_path)
    assert [r[0].text for r in arp_table(run).rows] == ["#Samples", "Full data", "Random", "XMAS"]
    assert benchmark_tables(run)[0].header == ["Method", "#Samples", "VQA", "POPE", "Rel."]
    lineage = next(t for t in all_tables(run) if t.key == "lineage")
    assert {r[0].text for r in lineage.rows} == {"full", "random", "xmas"}  # the run's own labels
    # the spec's display section wins; the lookups stay on the run's labels
    shown = {**spec, "display": {"selectors": {"xmas": "XMAS (ours)", "full": "Full (1K)"},
                                 "columns": {"emb_pope": "POPE-F1"}, "pool": "Toy-1K"}}
    run = from_frames(results, timings, shown, tmp_path)
    t = arp_table(run)
    assert [r[0].text for r in t.rows] == ["#Samples", "Full (1K)", "Random", "XMAS (ours)"]
    assert t.groups[1][0] == "Toy-1K" and run.selector_name("xmas") == "XMAS (ours)"
    assert benchmark_tables(run)[0].header[3] == "POPE-F1"
    # a label of its own is kept; two selectors that would print alike keep their labels
    labelled = {**SPEC, "selectors": [{"name": "random", "label": "xmas"}, {"name": "xmas", "label": "random"}]}
    assert from_frames(results, timings, labelled, tmp_path).names.selectors == {
        "xmas": "xmas", "random": "random", "full": "Full data"}
    clash = {**spec, "display": {"selectors": {"random": "XMAS"}}}
    assert from_frames(results, timings, clash, tmp_path).names.selectors == {
        "random": "random", "xmas": "xmas", "full": "Full data"}


def test_samples_come_from_the_prepare_job(tmp_path) -> None:
    """A real pool's size is the prepare job's n_samples (STORE/jobs/ID/meta.json beside STORE/runs/NAME)."""
    results, timings = frames()
    timings["prepare_job"] = "prepare-abc"
    (tmp_path / "jobs" / "prepare-abc").mkdir(parents=True)
    (tmp_path / "jobs" / "prepare-abc" / "meta.json").write_text('{"n_samples": 665298}')
    spec = {**SPEC, "world": None, "pool": {"path": "/data/llava_v1_5_mix665k.json"}, "budgets": ["10%", "20%"]}
    run = from_frames(results, timings, spec, tmp_path / "runs" / "golden")
    assert run.pool_samples == 665298 and run.samples("10%") == 66530 and run.samples("5000") == 5000
    assert [c.text for c in arp_table(run).rows[0]] == ["#Samples", "66,530", "133,060"]
    assert "from a 665,298-sample pool" in arp_table(run).caption


def test_markdown_has_no_stray_lines(run) -> None:
    """Only the title, the table and its caption; a single column group goes into the title."""
    md = to_markdown(arp_table(run)).splitlines()
    assert md[0] == "### ARP leaderboard — embedded world (seed 0, 1,000 samples)"
    assert md[1] == "" and md[2].startswith("| Selector |") and all(line.startswith("|") for line in md[2:8])
    assert md[8:] == ["", md[9]] and md[9].startswith("*Average relative performance")
    lineage = to_markdown(next(t for t in all_tables(run) if t.key == "lineage"))
    assert "| Selector | Budget | Seed | Status | Commit | Prepare | Score | Select | Fine-tune | Evaluate |" in lineage
    assert "[alpha-10](../../../../jobs/select-alpha-10%25-0/meta.json)" in lineage  # relative to report/tables/
