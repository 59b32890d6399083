import pytest

from selbench.evaluators.metrics import exact_match, normalize_answer, pope_metrics
from selbench.evaluators.relative import arp, osc, relative_performance


def test_relative_performance_and_arp_by_hand() -> None:
    ref = {"a": 0.50, "b": 0.80, "c": 0.20}
    cell = {"a": 0.45, "b": 0.80, "c": 0.25}
    assert relative_performance(0.45, 0.50) == pytest.approx(90.0)
    rel = {k: relative_performance(cell.get(k), ref.get(k)) for k in ref}
    assert arp(rel) == pytest.approx((90 + 100 + 125) / 3)
    # a missing column makes the cell N/A, never a partial mean
    assert arp({**rel, "c": None}) is None and arp({}) is None
    assert relative_performance(0.3, 0.0) is None


def test_osc_by_hand() -> None:
    assert osc(120.0, 300.0, 1000.0) == pytest.approx(0.42)
    assert osc(900.0, 300.0, 1000.0) == pytest.approx(1.2)  # costs more than it saves
    assert osc(None, 300.0, 1000.0) is None and osc(1.0, 1.0, 0.0) is None


def test_metrics() -> None:
    assert normalize_answer("The Red.") == "red" and exact_match(" top left ", "Top-left") == 1.0
    m = pope_metrics(["yes", "No.", "yes", "no"], ["yes", "no", "no", "yes"])
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == 0.5
    assert m["yes_ratio"] == 0.5
