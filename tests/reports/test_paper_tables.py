"""A published table recomputed through the real report path: results built from the paper's numbers, written
as a run folder, rendered by `selbench report --format md`; the Rel. column must come back as printed.

COINCIDE (Lee et al. 2024) Table 1, 20 % of LLaVA-665K, LLaVA-1.5-7B with LoRA — the rows that have all eleven
columns (Full, Random, EL2N, Self-Filter; the others print "-" for MM-Vet and average over the remaining ten,
which our ARP refuses: N/A, never a partial mean). Numbers as reprinted in MAGIC's Table 1 (its COINCIDE-derived
rows; the COINCIDE row's VQAv2/GQA/TextVQA/SQA-I match the values quoted from the paper in COINCIDE_code issue
13). ScalSelect Table 1 and the XMAS tables could not be read here (see README, Fidelity), so they are not tested.

POPE in coincide_v1 is the mean F1 of the three POPE splits; a paper row prints one POPE number, so all three
splits get it (their mean is that number). The run folder sits in a store (STORE/runs/coincide) whose prepare job
counted LLaVA-665K's 665,298 samples, so the #Samples column reads 133,060 at 20 %.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from selbench.cli import app
from selbench.evaluators.protocols import get_protocol

# column label → the paper's values (Full, Random, EL2N, Self-Filter), as printed
COINCIDE_TABLE_1 = {
    "MME-P": (1476.9, 1483.0, 1439.5, 1306.2), "SQA-I": (68.4, 68.5, 65.5, 61.4), "POPE": (86.4, 84.7, 84.3, 83.8),
    "VQAv2": (79.1, 75.7, 76.2, 73.7), "LLaVA-Bench": (67.9, 65.0, 64.9, 64.9), "TextVQA": (58.2, 55.3, 53.0, 52.9),
    "MMBench": (66.1, 62.2, 53.2, 48.8), "MMBench-Cn": (58.9, 54.8, 47.4, 45.3), "GQA": (63.0, 58.9, 58.7, 58.3),
    "VizWiz": (47.8, 44.3, 43.7, 53.2), "MM-Vet": (30.9, 29.5, 21.1, 26.6),
}
ROWS = ("full", "Random", "EL2N", "Self-Filter")
PRINTED_REL = {"Random": "95.8", "EL2N": "89.8", "Self-Filter": "90.5"}
POOL_SAMPLES = 665_298  # LLaVA-665K (llava_v1_5_mix665k.json)


def paper_run(run_dir: Path, display: dict | None = None) -> Path:
    """The paper's rows as a run folder; ``run_dir``'s grandparent is its store (with the prepare job's meta)."""
    protocol = get_protocol("coincide_v1")
    results, timings = [], []
    for i, selector in enumerate(ROWS):
        budget = "100%" if selector == "full" else "20%"
        for col in protocol.columns:
            printed = COINCIDE_TABLE_1[col.label][i]
            raw = printed / col.display_factor  # tables print 0–1 metrics × 100
            for src in col.sources:
                results.append({"run": "coincide", "selector": selector, "budget": budget, "seed": 0,
                                "benchmark": src.benchmark, "metric": src.metric, "value": raw, "n": None,
                                "stderr": None, "primary": True, "backend": "paper"})
        timings.append({"run": "coincide", "selector": selector, "budget": budget, "seed": 0, "status": "done",
                        "reason": None, "selection_s": None if selector == "full" else 1.0, "finetune_s": 10.0,
                        "feature_extraction_s": 0.0, "proxy_training_s": 0.0, "scoring_s": 0.0,
                        "prepare_job": "prepare-665k"})
    prepare = run_dir.parent.parent / "jobs" / "prepare-665k"
    prepare.mkdir(parents=True)
    (prepare / "meta.json").write_text(json.dumps({"id": "prepare-665k", "n_samples": POOL_SAMPLES}))
    run_dir.mkdir(parents=True)
    pd.DataFrame(results).to_parquet(run_dir / "results.parquet", index=False)
    pd.DataFrame(timings).to_parquet(run_dir / "timings.parquet", index=False)
    spec = {"name": "coincide", "protocol": "coincide_v1", "benchmarks": protocol.benchmarks,
            "pool": {"path": "llava_v1_5_mix665k.json"}, **({"display": display} if display else {})}
    (run_dir / "spec.json").write_text(json.dumps(spec))
    return run_dir


def test_coincide_table_1_rel_column_comes_back(tmp_path: Path) -> None:
    run_dir = paper_run(tmp_path / "runs" / "coincide")
    out = CliRunner().invoke(app, ["report", str(run_dir), "--format", "md"])
    assert out.exit_code == 0, out.output
    md = (run_dir / "report" / "tables" / "benchmarks-20pct.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    # the paper's column names, in the protocol's order
    assert [h.strip() for h in header.strip("|").split("|")] == [
        "Method", "#Samples", "VQAv2", "GQA", "VizWiz", "TextVQA", "SQA-I", "POPE", "MME-P", "MMBench", "MMBench-Cn",
        "MM-Vet", "LLaVA-Bench", "Rel."]
    for selector, rel in PRINTED_REL.items():
        row = next(line for line in md.splitlines() if line.startswith(f"| {selector} "))
        cells = [re.sub(r"\*", "", c).strip() for c in row.strip("|").split("|")]
        assert cells[-1] == rel, (selector, cells)
        assert cells[1] == "133,060"  # 20 % of 665,298
        assert cells[2] == f"{COINCIDE_TABLE_1['VQAv2'][ROWS.index(selector)]:.1f}"  # raw values printed back
    full = next(line for line in md.splitlines() if line.startswith("| Full data "))
    assert full.split("|")[2].strip() == "665,298"


def test_the_html_report_shows_the_papers_column_names(tmp_path: Path) -> None:
    from selbench.reports import build_report

    folder, _ = build_report(paper_run(tmp_path / "runs" / "coincide"))
    page = (folder / "index.html").read_text()
    assert "protocol coincide_v1: VQAv2, GQA" in page and "MMBench-Cn" in page and "95.8" in page


def test_display_section_names_the_pool_selectors_and_columns(tmp_path: Path) -> None:
    run_dir = paper_run(tmp_path / "runs" / "coincide", display={
        "pool": "LLaVA-665K", "selectors": {"Self-Filter": "SelfFilter"}, "columns": {"mme_p": "MME"}})
    out = CliRunner().invoke(app, ["report", str(run_dir), "--format", "latex"])
    assert out.exit_code == 0, out.output
    tex = (run_dir / "report" / "tables" / "arp.tex").read_text()
    assert r"\multicolumn{1}{c}{LLaVA-665K}" in tex and "SelfFilter & 90.5" in tex and "Self-Filter" not in tex
    assert " & MME & " in (run_dir / "report" / "tables" / "benchmarks-20pct.tex").read_text()
