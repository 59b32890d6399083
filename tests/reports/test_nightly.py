"""Nightly: the comparison rules on hand-made nights; a changed learning rate reported as a spec change (its cells
"moved", never regressions); the verdict line; unchanged files not written again; the trend page (ARP and OSC, date,
commit and links per night, changed cells marked, failure reasons); and two real consecutive nights where one
selector's code gets worse under an unchanged spec — its regression is the first line printed, the exit code 1."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from selbench.cli import app
from selbench.reports.nightly import Thresholds, compare, load_history, night_files, record, spec_changes

REPO = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 11, 20, 3, tzinfo=dt.UTC)
SPEC = {"name": "demo", "store": "/srv/a", "benchmarks": ["emb_vqa"], "finetune": {"lr": 5e-4, "epochs": 1},
        "selectors": [{"name": "random", "label": "a"}, {"name": "length", "label": "b"}],
        "display": {"selectors": {"a": "A"}}}


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


def test_an_arp_that_becomes_na_is_a_regression_and_its_return_an_improvement() -> None:
    """Both nights done, but tonight a column is missing (or the reference scored 0): N/A propagates to the verdict."""
    lost = compare(night({("a", "10%"): [80.0], ("b", "10%"): [70.0]}),
                   night({("a", "10%"): [None], ("b", "10%"): [70.0]}))
    assert kinds(lost) == {("a", "10%", "regression", "arp_v1")} and "ARP 80.0 → N/A" in lost[0].detail
    back = compare(night({("a", "10%"): [None]}), night({("a", "10%"): [80.0]}))
    assert kinds(back) == {("a", "10%", "improvement", "arp_v1")}
    assert compare(night({("a", "10%"): [None]}), night({("a", "10%"): [None]})) == []
    # after a spec change a numeric ARP delta is only "moved"; an ARP lost (like a failed cell) still counts
    from selbench.reports.nightly import _moved

    dropped = compare(night({("a", "10%"): [80.0]}), night({("a", "10%"): [60.0]}))
    assert [_moved(c).kind for c in dropped] == ["moved"] and _moved(lost[0]).kind == "regression"


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


def test_a_changed_learning_rate_is_a_spec_change_not_a_regression(tmp_path) -> None:
    prev = night({("a", "10%"): [60.0], ("b", "10%"): [60.0]})
    first = record(tmp_path, prev, "demo", "h1", "c1", now=T0, benchmarks=["emb_vqa"], spec=SPEC)
    assert first.lines() == ["FIRST NIGHT: 2 cells recorded, nothing to compare yet — demo, night 2026-11-20 "
                             "03:00 UTC — exit 0"]
    # the store and the display names move too: neither changes a number, so neither is reported
    spec = {**SPEC, "store": "/srv/b", "display": {}, "finetune": {"lr": 1e-3, "epochs": 1}}
    assert spec_changes(SPEC, spec) == [("finetune.lr", "0.0005", "0.001")]
    lower = night({("a", "10%"): [40.0], ("b", "10%"): [80.0]})
    second = record(tmp_path, lower, "demo", "h2", "c1", now=T0 + dt.timedelta(days=1), benchmarks=["emb_vqa"],
                    spec=spec)
    assert not second.regressions and second.exit_code == 0
    assert kinds(second.changes) == {("*", "*", "spec", "finetune.lr"), ("a", "10%", "moved", "arp_v1"),
                                     ("b", "10%", "moved", "arp_v1")}
    lines = second.lines()
    assert lines[0].startswith("SPEC CHANGED (finetune.lr): 2 of 2 cells moved, not counted as regressions")
    assert lines[1] == "  spec changed: finetune.lr 0.0005 → 0.001"
    assert lines[2].startswith("  moved: a @ 10%: ARP 60.0 → 40.0 (-20.0; threshold ±5.0), after the spec change")
    saved = json.loads((tmp_path / "nights" / second.night / "comparison.json").read_text())
    assert saved["exit_code"] == 0 and saved["verdict"] == lines[0]
    # the next night compares with this one, under its spec: a drop is a regression again; so is a failure
    worse = night({("a", "10%"): [20.0], ("b", "10%"): [80.0]}, failed=(("b", "10%", 0),))
    third = record(tmp_path, worse, "demo", "h2", "c2", now=T0 + dt.timedelta(days=2), benchmarks=["emb_vqa"],
                   spec=spec)
    assert kinds(third.changes) == {("a", "10%", "regression", "arp_v1"), ("b", "10%", "regression", "status")}
    assert third.lines()[0].startswith("REGRESSION: 2 of 2 cells regressed (a @ 10%, b @ 10%)")
    assert third.lines()[0].endswith("exit 1") and third.lines()[1].startswith("  regression: a @ 10%: ARP 40.0 → 20.0")
    # a spec change and a cell that now fails: the failure still counts (it is not explained away)
    fourth = record(tmp_path, night({("a", "10%"): [20.0], ("b", "10%"): [80.0]}, failed=(("a", "10%", 0),)), "demo",
                    "h3", "c2", now=T0 + dt.timedelta(days=3), benchmarks=["emb_vqa"], spec={**spec, "seeds": [1]})
    assert [c.kind for c in fourth.regressions] == ["regression"] and fourth.regressions[0].metric == "status"
    assert fourth.lines()[0].startswith("REGRESSION: 1 of 2 cells regressed (a @ 10%); 1 improved; spec changed "
                                        "(seeds)")


def test_unchanged_files_are_not_written_again(tmp_path) -> None:
    board = night({("a", "10%"): [60.0]})
    items = pd.DataFrame({"selector": ["a"], "budget": ["10%"], "seed": [0], "benchmark": ["emb_vqa"], "item": ["1"],
                          "kind": ["mean"], "stats": [[1.0, 1.0]]})
    report = tmp_path / "report.html"
    report.write_text("<html>night one</html>")
    history = tmp_path / "history"
    args = dict(benchmarks=["emb_vqa"], items=items, spec=SPEC, report=report, log="cached score-1\n")
    first = record(history, board, "demo", "h1", "c1", now=T0, **args)
    stamps = {p: p.stat().st_mtime_ns for p in (history / "nights" / first.night).iterdir()}
    second = record(history, board.copy(), "demo", "h1", "c1", now=T0 + dt.timedelta(days=1), **args)
    assert second.changes == [] and second.lines()[0].startswith("UNCHANGED: 1 cells, no change beyond noise")
    assert sorted(p.name for p in (history / "nights" / second.night).iterdir()) == ["comparison.json"]
    files = {"leaderboard": "leaderboard.parquet", "items": "items.parquet", "spec": "spec.json",
             "report": "report.html", "log": "run.log"}
    assert night_files(history, second.night) == night_files(history, first.night) == {
        k: f"nights/{first.night}/{f}" for k, f in files.items()}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # night one's files untouched
    report.write_text("<html>night three</html>")
    third = record(history, board, "demo", "h1", "c1", now=T0 + dt.timedelta(days=2), **args)
    assert night_files(history, third.night)["report"] == f"nights/{third.night}/report.html"
    assert night_files(history, third.night)["items"] == f"nights/{first.night}/items.parquet"


def test_trend_page_shows_arp_osc_nights_links_changes_and_failures(tmp_path) -> None:
    report = tmp_path / "r.html"
    report.write_text("<html>report</html>")
    record(tmp_path, night({("a", "10%"): [60.0], ("b", "10%"): [60.0]}, osc=0.5), "demo", "h1", "0123456789abcdef",
           now=T0, spec=SPEC, report=report)
    last = record(tmp_path, night({("a", "10%"): [40.0], ("b", "10%"): [60.0]}, osc=0.9, failed=(("b", "10%", 0),)),
                  "demo", "h1", "fedcba9876543210", now=T0 + dt.timedelta(days=1), spec=SPEC, report=report)
    page = (tmp_path / "index.html").read_text()
    assert "ARP (arp_v1) per night" in page and "OSC (osc_v1) per night" in page
    assert "2026-11-20 03:00 UTC" in page and "2026-11-21 03:00 UTC" in page
    assert "<code>0123456789ab</code>" in page and "<code>fedcba987654</code>" in page
    assert f'href="nights/{last.night}/comparison.json"' in page
    assert f'href="nights/{last.previous}/report.html"' in page  # the report did not change: night one's copy
    assert "REGRESSION: 2 of 2 cells regressed (a @ 10%, b @ 10%) — demo, night 2026-11-21 03:00 UTC vs " in page
    assert '<td class="regression" title="regression: ARP 60.0 → 40.0' in page  # a's ARP, marked that night
    assert '<td class="regression" title="regression: OSC 0.50 → 0.90' in page  # a's OSC
    assert '<span class="reason">evaluate: crashed</span>' in page  # b failed: the reason, not a bare N/A
    assert (tmp_path / "trend.png").stat().st_size > 1000


@pytest.mark.slow
def test_two_nights_flag_exactly_the_selector_that_got_worse(small_run, tmp_path, monkeypatch) -> None:
    """The same spec both nights; the code of "picker" (a module of its own) changes in between: random selection,
    then yes/no rows first. One budget, so each night re-runs one cell; the rest comes from the store. (50 %: at
    25 % of this 400-sample world random selection collapses too, and both nights answer alike.)"""
    from selbench.harness import codeprint

    code = tmp_path / "code"
    code.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(code), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(code))
    picker = code / "nightly_picker.py"
    store = tmp_path / "store"
    shutil.copytree(small_run["root"] / "store", store)
    history = tmp_path / "history"
    spec = {**small_run["spec"], "store": str(store), "budgets": [0.5],
            "selectors": [{"name": "picker_impl", "impl": "nightly_picker:Picker", "label": "picker"},
                          *small_run["spec"]["selectors"][1:]]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))

    def tonight(base: str, *flags: str):
        picker.write_text(f"{base}\n\n\nclass Picker(Base):\n    name = \"picker_impl\"\n")
        sys.modules.pop("nightly_picker", None)
        importlib.invalidate_caches()
        codeprint.clear_cache()
        return CliRunner().invoke(app, ["nightly", str(path), "--history", str(history), *flags])

    first = tonight("from selbench.selectors.random import RandomSelector as Base")
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert lines[0].startswith("FIRST NIGHT: 3 cells recorded"), first.output  # before anything else
    assert "trend page:" in first.output and "Leaderboard" in first.output
    assert not any(line.startswith(("start ", "cached ", "done ", "[selbench]")) for line in lines)  # in run.log

    second = tonight("from tests.reports.worse import YesNoFirstSelector as Base", "--quiet")
    assert second.exit_code == 1, second.output
    lines = second.output.splitlines()
    assert lines[0].startswith("REGRESSION: 1 of 3 cells regressed (picker @ 50%)"), second.output
    assert lines[0].endswith("exit 1") and lines[1].startswith("  regression: picker @ 50%: ARP ")
    assert all(line.startswith("  ") for line in lines[1:]) and "Leaderboard" not in second.output  # --quiet
    nights = sorted((history / "nights").iterdir())
    changes = json.loads((nights[-1] / "comparison.json").read_text())["changes"]
    assert {c["selector"] for c in changes} == {"picker"}, changes  # the cached cells did not move at all
    assert any(c["metric"] == "arp_v1" for c in changes if c["kind"] == "regression")
    hist = load_history(history)
    assert len(hist) == 2 * 3 and hist["night"].nunique() == 2
    log = (history / night_files(history, nights[-1].name)["log"]).read_text()
    assert "cached prepare-" in log and "done evaluate-" in log  # what the run did, kept out of the output
    page = (history / "index.html").read_text()
    assert "picker" in page and "OSC (osc_v1) per night" in page and "report.html" in page
