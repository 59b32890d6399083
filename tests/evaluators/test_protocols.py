"""Protocols are the papers' column lists, exactly; their columns read the right metrics of the right runs."""

from __future__ import annotations

import pandas as pd
import pytest

from selbench.evaluators.benchmarks import REGISTRY
from selbench.evaluators.protocols import PROTOCOLS, columns_for, get_protocol
from selbench.leaderboard import leaderboard


def labels(name: str) -> list[str]:
    return [c.label for c in get_protocol(name).columns]


def test_scalselect_v1_is_table_1() -> None:
    assert labels("scalselect_v1") == ["MMBench-En", "MMBench-Cn", "MME-P", "MME-C", "AI2D", "POPE-A", "POPE-P",
                                       "SQA-IMG", "OCRBench"]
    cols = {c.label: c for c in get_protocol("scalselect_v1").columns}
    # POPE counted twice: accuracy and precision of one and the same POPE run; MME-P and MME-C of one MME run
    assert [(s.benchmark, s.metric) for s in cols["POPE-A"].sources] == [("pope", "pope_accuracy")]
    assert [(s.benchmark, s.metric) for s in cols["POPE-P"].sources] == [("pope", "pope_precision")]
    assert cols["MME-P"].sources[0].benchmark == cols["MME-C"].sources[0].benchmark == "mme"
    assert (cols["MME-P"].scale, cols["MME-C"].scale) == (2000, 800)
    assert get_protocol("scalselect_v1").benchmarks.count("pope") == 1


def test_xmas_v1_is_its_ten_benchmarks_with_three_split_pope_f1() -> None:
    assert labels("xmas_v1") == ["VQAv2", "GQA", "VizWiz", "TextVQA", "SQA-I", "POPE", "MME-P", "MMBench",
                                 "MM-Vet", "LLaVA-Bench"]
    pope = next(c for c in get_protocol("xmas_v1").columns if c.label == "POPE")
    assert [(s.benchmark, s.metric) for s in pope.sources] == [
        ("pope_random", "pope_f1_score"), ("pope_pop", "pope_f1_score"), ("pope_adv", "pope_f1_score")]
    assert [REGISTRY[s.benchmark].task for s in pope.sources] == ["pope_random", "pope_pop", "pope_adv"]


def test_coincide_v1_adds_mmbench_cn() -> None:
    assert labels("coincide_v1") == [*labels("xmas_v1")[:8], "MMBench-Cn", *labels("xmas_v1")[8:]]
    assert len(labels("coincide_v1")) == 11 and labels("embedded_v1") == ["emb_vqa", "emb_mc", "emb_pope",
                                                                         "emb_count", "emb_ocr"]


def test_every_source_is_a_registered_benchmark() -> None:
    for p in PROTOCOLS.values():
        for c in p.columns:
            assert c.sources and all(s.benchmark in REGISTRY for s in c.sources), (p.name, c.key)
        assert len({c.key for c in p.columns}) == len(p.columns)


def _results(cells: dict[tuple[str, str], dict[tuple[str, str], float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, timings = [], []
    for (sel, budget), vals in cells.items():
        rows += [{"selector": sel, "budget": budget, "seed": 0, "benchmark": b, "metric": m, "value": v,
                  "primary": m == REGISTRY[b].metric} for (b, m), v in vals.items()]
        timings.append({"selector": sel, "budget": budget, "seed": 0, "status": "done", "reason": None,
                        "selection_s": 1.0, "finetune_s": 10.0})
    return pd.DataFrame(rows), pd.DataFrame(timings)


def test_pope_columns_and_the_three_split_mean_through_the_leaderboard() -> None:
    ref = {("pope", "pope_accuracy"): 0.80, ("pope", "pope_precision"): 0.90, ("pope", "pope_f1_score"): 0.85,
           ("pope_random", "pope_f1_score"): 0.90, ("pope_pop", "pope_f1_score"): 0.80,
           ("pope_adv", "pope_f1_score"): 0.70}
    cell = {("pope", "pope_accuracy"): 0.60, ("pope", "pope_precision"): 0.99, ("pope", "pope_f1_score"): 0.70,
            ("pope_random", "pope_f1_score"): 0.60, ("pope_pop", "pope_f1_score"): 0.60,
            ("pope_adv", "pope_f1_score"): 0.30}
    results, timings = _results({("full", "100%"): ref, ("x", "10%"): cell})
    cols = [c for c in get_protocol("scalselect_v1").columns if c.label.startswith("POPE")]
    board = leaderboard(results, timings, cols).set_index("selector")
    assert board.loc["x", "pope_a"] == 0.60 and board.loc["x", "pope_p"] == 0.99
    assert board.loc["x", "rel_pope_a"] == pytest.approx(75.0) and board.loc["x", "rel_pope_p"] == pytest.approx(110.0)
    assert board.loc["x", "arp_v1"] == pytest.approx((75.0 + 110.0) / 2)
    pope3 = [c for c in get_protocol("xmas_v1").columns if c.label == "POPE"]
    board = leaderboard(results, timings, pope3).set_index("selector")
    assert board.loc["full", "pope"] == pytest.approx(0.80) and board.loc["x", "pope"] == pytest.approx(0.50)
    assert board.loc["x", "arp_v1"] == pytest.approx(62.5)


def test_a_missing_column_makes_arp_na() -> None:
    ref = {("pope_random", "pope_f1_score"): 0.9, ("pope_pop", "pope_f1_score"): 0.8,
           ("pope_adv", "pope_f1_score"): 0.7, ("gqa", "exact_match"): 0.6}
    cell = {k: v for k, v in ref.items() if k[0] != "pope_adv"}  # one of three POPE splits missing
    results, timings = _results({("full", "100%"): ref, ("x", "10%"): cell})
    cols = [c for c in get_protocol("xmas_v1").columns if c.label in ("POPE", "GQA")]
    board = leaderboard(results, timings, cols).set_index("selector")
    assert pd.isna(board.loc["x", "pope"]) and pd.isna(board.loc["x", "arp_v1"])
    assert board.loc["x", "rel_gqa"] == pytest.approx(100.0)


def test_a_benchmark_list_without_protocol_has_one_primary_column_each() -> None:
    cols = columns_for(None, ["emb_vqa", "gqa"])
    assert [(c.key, c.sources[0].metric) for c in cols] == [("emb_vqa", "exact_match"), ("gqa", "exact_match")]
