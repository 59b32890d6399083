"""Nightly: the comparison rules on hand-made nights, and two real consecutive nights where one selector gets worse
(its implementation changes under the same label) — exactly that selector is flagged and the exit code is 1."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from selbench.cli import app
from selbench.reports.nightly import Thresholds, compare, load_history, record

REPO = Path(__file__).resolve().parents[2]


def night(cells: dict[tuple[str, str], list[float | None]], osc: float = 0.5, failed: tuple = ()) -> pd.DataFrame:
    rows = []
    for (sel, budget), arps in cells.items():
        for seed, a in enumerate(arps):
            bad = (sel, budget, seed) in failed
            rows.append({"selector": sel, "budget": budget, "seed": seed, "status": "failed" if bad else "done",
                         "reason": "evaluate: crashed" if bad else None, "arp_v1": None if bad else a,
                         "osc_v1": None if bad else osc})
    return pd.DataFrame(rows)


def kinds(changes) -> set[tuple[str, str, str, str]]:
    return {(c.selector, c.budget, c.kind, c.metric) for c in changes}


def test_single_seed_uses_the_tolerance() -> None:
    prev = night({("a", "10%"): [60.0], ("b", "10%"): [60.0], ("c", "10%"): [60.0]})
    cur = night({("a", "10%"): [54.0], ("b", "10%"): [56.0], ("c", "10%"): [66.0]})
    assert kinds(compare(prev, cur, Thresholds(arp_tolerance=5.0))) == {
        ("a", "10%", "regression", "arp_v1"), ("c", "10%", "improvement", "arp_v1")}


def test_seed_noise_widens_the_threshold() -> None:
    # seeds spread ±10 around the mean: a 6-point drop of the mean is noise, a 30-point drop is not
    prev = night({("a", "10%"): [50.0, 70.0], ("b", "10%"): [50.0, 70.0]})
    cur = night({("a", "10%"): [44.0, 64.0], ("b", "10%"): [20.0, 40.0]})
    changes = compare(prev, cur, Thresholds(arp_tolerance=2.0, z=2.0))
    assert kinds(changes) == {("b", "10%", "regression", "arp_v1")}
    # pooled std = sqrt(200) ≈ 14.14; threshold = 2 · 14.14 · sqrt(1/2 + 1/2) ≈ 28.3 < 30
    assert changes[0].threshold == pytest.approx(2 * 200 ** 0.5)


def test_failures_osc_new_and_dropped() -> None:
    prev = night({("a", "10%"): [60.0], ("b", "10%"): [60.0], ("gone", "10%"): [60.0]}, failed=(("b", "10%", 0),))
    cur = night({("a", "10%"): [60.0], ("b", "10%"): [60.0], ("new", "10%"): [60.0]}, failed=(("a", "10%", 0),))
    assert kinds(compare(prev, cur)) == {
        ("a", "10%", "regression", "status"), ("b", "10%", "improvement", "status"),
        ("new", "10%", "new", "status"), ("gone", "10%", "dropped", "status")}
    slow = night({("a", "10%"): [60.0]}, osc=0.8)
    assert kinds(compare(night({("a", "10%"): [60.0]}, osc=0.5), slow)) == {("a", "10%", "regression", "osc_v1")}
    assert compare(night({("a", "10%"): [60.0]}, osc=0.5), night({("a", "10%"): [60.0]}, osc=0.6)) == []


def test_history_appends_and_compares_with_the_same_run(tmp_path) -> None:
    t0 = dt.datetime(2026, 11, 20, 3, tzinfo=dt.timezone.utc)
    a = record(tmp_path, night({("a", "10%"): [60.0]}), "demo", "h1", "c1", now=t0,
               benchmarks=["emb_vqa", "emb_pope"])
    assert a.previous is None and a.changes == []
    record(tmp_path, night({("a", "10%"): [10.0]}), "other", "h9", "c1", now=t0 + dt.timedelta(hours=1))
    b = record(tmp_path, night({("a", "10%"): [40.0]}), "demo", "h1", "c2", now=t0 + dt.timedelta(days=1),
               benchmarks=["emb_vqa", "emb_pope"])
    assert b.previous == a.night and [c.kind for c in b.changes] == ["regression"]
    hist = load_history(tmp_path)
    assert len(hist) == 3 and list(hist["commit"]) == ["c1", "c1", "c2"]
    saved = json.loads((tmp_path / "nights" / b.night / "comparison.json").read_text())
    assert saved["previous"] == a.night and saved["changes"][0]["selector"] == "a"
    assert "regression" in (tmp_path / "index.html").read_text()
    # another benchmark set: ARP is another quantity, so no deltas, only a note; the next night compares again
    c = record(tmp_path, night({("a", "10%"): [50.0]}), "demo", "h2", "c2", now=t0 + dt.timedelta(days=2),
               benchmarks=["emb_vqa"])
    d = record(tmp_path, night({("a", "10%"): [10.0]}), "demo", "h2", "c2", now=t0 + dt.timedelta(days=3),
               benchmarks=["emb_vqa"])
    assert [x.kind for x in c.changes] == ["incomparable"] and not c.regressions
    assert [x.kind for x in d.changes] == ["regression"]
    (tmp_path / "history.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="history.parquet: cannot read"):
        record(tmp_path, night({("a", "10%"): [40.0]}), "demo", "h1", "c2")


@pytest.mark.slow
def test_two_nights_flag_exactly_the_selector_that_got_worse(small_run, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    store = tmp_path / "store"
    shutil.copytree(small_run["root"] / "store", store)
    history = tmp_path / "history"
    spec = {**small_run["spec"], "store": str(store)}
    path = tmp_path / "spec.yaml"

    path.write_text(yaml.safe_dump(spec))
    first = CliRunner().invoke(app, ["nightly", str(path), "--history", str(history)])
    assert first.exit_code == 0, first.output
    assert "first night" in first.output

    # the next night, "picker" is a different (worse) implementation; everything else is unchanged
    spec["selectors"] = [{"name": "yesno_first", "impl": "tests.reports.worse:YesNoFirstSelector",
                          "label": "picker"}, *spec["selectors"][1:]]
    path.write_text(yaml.safe_dump(spec))
    second = CliRunner().invoke(app, ["nightly", str(path), "--history", str(history)])
    assert second.exit_code == 1, second.output
    nights = sorted((history / "nights").iterdir())
    changes = json.loads((nights[-1] / "comparison.json").read_text())["changes"]
    regressed = {c["selector"] for c in changes if c["kind"] == "regression"}
    assert regressed == {"picker"}, changes
    assert any(c["metric"] == "arp_v1" for c in changes if c["kind"] == "regression")
    assert {c["selector"] for c in changes} == {"picker"}  # the cached cells did not move at all
    hist = load_history(history)
    assert len(hist) == 2 * 6 and hist["night"].nunique() == 2
    assert "picker" in (history / "index.html").read_text()
