"""The report's column flags read the reference's per-item outcomes: a reference that gives one answer class on every
item (under POPE's rule or lmms-eval's) does not separate selectors."""

from __future__ import annotations

import pandas as pd

from selbench.evaluators.items import from_predictions, from_samples
from selbench.leaderboard import REFERENCE
from selbench.reports.health import _constant_reference


def _items(kind: str, stats: list[list[float]], selector: str = REFERENCE) -> pd.DataFrame:
    return pd.DataFrame([{"selector": selector, "benchmark": "pope", "kind": kind, "stats": s} for s in stats])


def _lmms(answers: list[str], golds: list[str]) -> list[list[float]]:
    samples = [{"doc_id": i, "pope_accuracy": {"prediction": a.lower().strip(), "ground_truth": g}}
               for i, (a, g) in enumerate(zip(answers, golds))]
    out = from_samples(samples, "pope_f1_score")
    assert out is not None and out.kind == "pope_lmms"
    return out.stats


def test_a_constant_pope_answer_is_named_under_either_rule() -> None:
    golds = ["yes", "no", "yes", "no"]
    assert _constant_reference(_items("pope", from_predictions("pope", ["yes"] * 4, golds).stats),
                               "pope") == "answers yes on every item"
    assert _constant_reference(_items("pope_lmms", _lmms(["yes"] * 4, golds)), "pope") == "answers yes on every item"
    assert _constant_reference(_items("pope_lmms", _lmms(["No"] * 4, golds)), "pope") == "answers no on every item"
    # no yes/no at all: the reference's POPE scores are 0, which the flags name first ("scores 0")
    assert _constant_reference(_items("pope_lmms", _lmms(["a red circle."] * 4, golds)), "pope") is None


def test_a_mixed_pope_answer_or_another_selector_is_not_flagged() -> None:
    golds = ["yes", "no", "yes", "no"]
    assert _constant_reference(_items("pope_lmms", _lmms(["yes", "no", "maybe", "yes"], golds)), "pope") is None
    assert _constant_reference(_items("pope_lmms", _lmms(["yes", "yes", "maybe", "yes"], golds)), "pope") is None
    assert _constant_reference(_items("pope_lmms", _lmms(["yes"] * 4, golds), selector="random"), "pope") is None
