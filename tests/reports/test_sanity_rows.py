"""Sanity references in the report: the oracle and anti-oracle subsets follow the selectors in every budget table,
ruled off and never marked best, ranked or timed (even where the oracle's ARP is the highest of the run); the
untuned target has no budget column, a row under the full-data reference in the per-benchmark tables and a dotted
line in the ARP plot. The whole report (HTML, cards, figures, exports) renders with them."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from tests.reports.frames import (
    DEMO_BENCH,
    DEMO_BUDGETS,
    DEMO_POOL,
    DEMO_SELECTORS,
    demo_pool,
    demo_selections,
    frames_with_sanity,
    write_store,
)

from selbench.reports import build_report
from selbench.reports.export import to_latex, to_markdown
from selbench.reports.tables import (
    RunData,
    arp_table,
    benchmark_tables,
    budgets_in_order,
    from_frames,
    sanity_in_order,
    selectors_in_order,
    significance_table,
    time_table,
)

SANITY = ["oracle", "anti-oracle"]
SHOWN = ["Oracle (reference)", "Anti-oracle (reference)"]
UNTUNED = "Untuned (no fine-tuning)"
NAMES = ["Random", "Length", "Perplexity", "COINCIDE", "PRISM", "XMAS", "ScalSelect"]  # DEMO_SELECTORS, printed


def sanity_run(tmp_path: Path, intervals: bool = True, display: dict | None = None) -> RunData:
    results, timings, items, spec = frames_with_sanity(str(tmp_path / "store"))
    if display:
        spec["display"] = display
    return from_frames(results, timings, spec, tmp_path / "store" / "runs" / "sanity", items if intervals else None)


def sanity_store(root: Path) -> Path:
    """The run in a store: the pool manifest, every selection (the oracle's and anti-oracle's too), each job's
    meta.json, and the run folder. Returns the run folder."""
    pool = demo_pool()
    selections = demo_selections(pool)
    uids = list(pool["uid"])
    for k, kind in enumerate(SANITY):
        for budget in DEMO_BUDGETS:
            n = DEMO_POOL * int(budget[:-1]) // 100
            selections[(kind, budget, 0)] = uids[:n] if k == 0 else uids[-n:]
    return write_store(root, "sanity", frames_with_sanity(str(root)), pool, selections)


def test_orders_have_no_untuned_budget_and_the_sanity_subsets_last(tmp_path: Path) -> None:
    run = sanity_run(tmp_path)
    assert set(run.board["role"]) == {"reference", "selector", "sanity"}
    assert budgets_in_order(run) == DEMO_BUDGETS  # no "0%" (the untuned target) nor "100%" (the reference)
    assert selectors_in_order(run) == DEMO_SELECTORS + SANITY and sanity_in_order(run) == SANITY
    assert "0%" not in arp_table(run).header
    assert "benchmarks-0pct" not in {t.key for t in benchmark_tables(run)}


@pytest.mark.parametrize("intervals", [True, False])
def test_arp_table_shows_sanity_rows_after_the_selectors_never_best(tmp_path: Path, intervals: bool) -> None:
    run = sanity_run(tmp_path, intervals)
    t = arp_table(run)
    assert [r[0].text for r in t.rows] == ["#Samples", "Full data", *NAMES, *SHOWN]
    assert t.split == 2 and t.tail == 2
    for j in range(1, len(DEMO_BUDGETS) + 1):
        oracle, selectors = t.rows[-2][j], [r[j] for r in t.rows[2:-2]]
        assert oracle.value is not None and all(c.value is None or c.value < oracle.value for c in selectors)
        assert not oracle.best and not t.rows[-1][j].best  # the highest ARP, and still not bold
        assert any(c.best for c in selectors)  # the best is a selector's
    assert "Untuned target (no fine-tuning): ARP" in t.caption and "never ranked" in t.caption
    latex = to_latex(t)
    assert latex.count(r"\midrule") == 3  # under the header, under the references, above the sanity rows
    assert latex.index(r"\midrule" + "\nOracle (reference)") > latex.index("ScalSelect")
    assert "| Oracle (reference) |" in to_markdown(t)


def test_significance_table_does_not_rank_the_sanity_references(tmp_path: Path) -> None:
    run = sanity_run(tmp_path)
    t = significance_table(run)
    assert t is not None and t.tail == len(DEMO_BUDGETS) * len(SANITY)
    selectors, sanity = t.rows[:-t.tail], t.rows[-t.tail:]
    assert {r[1].text for r in selectors} == set(NAMES) and [r[1].text for r in sanity] == SHOWN * 3
    for r in sanity:
        assert r[2].value is not None and r[2].low is not None and not r[2].best  # a CI, never bold
        assert r[3].value is not None and r[3].p is not None  # a difference to random
        assert r[5].text == "—" and r[6].text == "—"  # no rank, no tie
    assert any(r[5].text != "—" for r in selectors) and "never ranked" in t.caption
    ci = run.intervals
    assert ci is not None
    oracle = ci.cell("oracle", "10%")
    assert oracle is not None and pd.isna(oracle["rank"]) and not oracle["tie_best"]


def test_benchmark_tables_have_the_untuned_row_under_the_reference(tmp_path: Path) -> None:
    run = sanity_run(tmp_path)
    tables = benchmark_tables(run)
    assert [t.key for t in tables] == ["benchmarks-10pct", "benchmarks-20pct", "benchmarks-30pct"]
    for t in tables:
        assert [r[0].text for r in t.rows] == ["Full data", UNTUNED, *NAMES, *SHOWN]
        assert t.split == 2 and t.tail == 2
        full, untuned = t.rows[0], t.rows[1]
        assert untuned[1].text == "0"
        for j, key in enumerate(DEMO_BENCH, start=2):  # the full reference beats the untuned target (Count ties)
            assert full[j].value is not None and untuned[j].value is not None
            assert full[j].value > untuned[j].value if key != "emb_count" else full[j].value == untuned[j].value
        assert not any(c.best for r in t.rows[:2] + t.rows[-2:] for c in r)
        assert any(c.best for r in t.rows[2:-2] for c in r)
        assert "Untuned (no fine-tuning): the target before any fine-tuning" in t.caption


def test_time_table_has_no_sanity_rows(tmp_path: Path) -> None:
    t = time_table(sanity_run(tmp_path))
    printed = {r[0].text for r in t.rows}
    assert printed == {"Full data", *NAMES} and t.tail == 0
    assert "0%" not in {r[1].text for r in t.rows}


def test_display_section_renames_the_sanity_references(tmp_path: Path) -> None:
    run = sanity_run(tmp_path, display={"selectors": {"oracle": "Ground truth", "untuned": "Base model"}})
    t = benchmark_tables(run)[0]
    assert [r[0].text for r in t.rows][:2] == ["Full data", "Base model"]
    assert [r[0].text for r in t.rows][-2:] == ["Ground truth", "Anti-oracle (reference)"]


def test_report_renders_with_sanity_rows(tmp_path: Path) -> None:
    run_dir = sanity_store(tmp_path / "store")
    folder, written = build_report(run_dir)
    assert written
    page = (folder / "index.html").read_text()
    for name in (*SHOWN, UNTUNED):
        assert name in page
    # the sanity rows in a body of their own, below the sorted one, in the ARP and per-benchmark tables
    arp = re.search(r'<table class="arp sortable" id="table-arp">.*?</table>', page, re.S)
    assert arp and arp.group(0).count('<tbody class="sanity">') == 1
    assert arp.group(0).index("Oracle (reference)") > arp.group(0).index("ScalSelect")
    assert "sanity references chosen with the embedded world" in page
    time_html = re.search(r'id="table-time">.*?</table>', page, re.S)
    assert time_html and "Oracle" not in time_html.group(0) and UNTUNED not in time_html.group(0)
    # figures: grey dashed sanity lines and the untuned floor in the ARP plot, none in the cost figures
    svg = {f: (folder / "plots" / f"{f}.svg").read_text()
           for f in ("arp_vs_budget", "arp_vs_osc", "heatmap", "time_breakdown")}
    oracle = len(DEMO_SELECTORS)  # the sanity subsets' style indices follow the selectors'
    assert f'id="sel{oracle}-line0"' in svg["arp_vs_budget"] and 'id="untuned-line"' in svg["arp_vs_budget"]
    assert f'id="sel{oracle}-swatch0"' in svg["heatmap"]
    for f in ("arp_vs_osc", "time_breakdown"):
        assert f'id="sel{oracle}-' not in svg[f] and f'id="sel{oracle + 1}-' not in svg[f]
    assert page.count("<svg ") == 4
    # cards: the oracle's and anti-oracle's subsets, nothing for the untuned target (it selects nothing)
    cards = (folder / "cards.html").read_text()
    assert "Oracle (reference)" in cards and "Anti-oracle (reference)" in cards and UNTUNED not in cards
    assert "no selection (done)" not in cards
    # exports: the leaderboard keeps the role column; every table written in every format
    board = pd.read_csv(folder / "data" / "leaderboard.csv")
    assert set(board["role"]) == {"reference", "selector", "sanity"}
    assert set(board.loc[board["role"] == "sanity", "selector"]) == {*SANITY, "untuned"}
    for key in ("arp", "significance", "benchmarks-10pct", "time", "lineage"):
        for ext in ("tex", "md", "csv"):
            assert (folder / "tables" / f"{key}.{ext}").stat().st_size > 0
    assert "untuned" in (folder / "tables" / "lineage.csv").read_text()
