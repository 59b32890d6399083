"""Nightly comparison: run a spec, compare every cell with the previous night, append to the history, render a
trend page. Regressions make the exit code non-zero so a scheduler can alert.

Where both nights kept per-item outcomes (``items.parquet``), a cell's ARP change is tested with the paired
bootstrap on them (both nights answer the same items): a change counts when its 95 % CI excludes 0 (or, as
without items, when it exceeds ``arp_tolerance``), so a small regression shows with one seed and a same-code re-run
(identical answers) shows none. Otherwise (an older
history) a change counts only beyond seed noise. Per (selector, budget) the nights' ARPs are means over seeds; the ARP
threshold is ``max(arp_tolerance, z · s · sqrt(1/n_prev + 1/n_now))`` with ``s`` the pooled std over seeds of
every cell that has several seeds in either night (two-sample z-test on the means; with one seed per cell there
is no noise estimate and ``arp_tolerance`` alone decides). OSC is a time ratio, noisy on shared machines: it
counts when it moves by more than ``osc_tolerance`` relative. A cell that was done and now fails is a regression
too; one that failed and now completes is an improvement.

Spec changes: each night keeps the run folder's ``spec.json``; anything that differs from the previous night's
(``store`` and ``display`` aside: where results live and how tables name things change no number) is reported as
``spec`` lines ("finetune.lr 0.0005 → 0.001"). The cells are still compared, but an ARP or OSC change after a spec
change is ``moved``, never a regression or an improvement: it measures the spec, not the code. A cell that now fails
stays a regression (a failure is not explained away). A changed benchmark set makes ARP another quantity:
``incomparable``, no deltas at all. Either way that night is the next night's baseline.

History layout (``--history DIR``): ``history.parquet`` (one row per night × cell), ``nights/<stamp>/`` with
``comparison.json`` (the changes, and where the night's files are), ``leaderboard.parquet``, ``items.parquet``,
``spec.json``, ``report.html`` (the run's report that night) and ``run.log`` — each written only when it differs from
the previous night's (otherwise ``comparison.json`` points at the earlier copy) — and ``index.html``, the trend
page: ARP and OSC per cell and night, each night's date, commit, verdict and links.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from selbench.evaluators.protocols import Column
from selbench.evaluators.relative import ARP_VERSION, OSC_VERSION
from selbench.leaderboard import REFERENCE
from selbench.leaderboard.intervals import seed_runs
from selbench.leaderboard.statistics import PairedDifference, paired_difference
from selbench.reports.tables import aggregate

HISTORY = "history.parquet"
ITEMS = "items.parquet"
KEY = ["selector", "budget"]


@dataclass(frozen=True)
class Thresholds:
    arp_tolerance: float = 5.0  # ARP points
    osc_tolerance: float = 0.25  # relative change of OSC
    z: float = 2.0


@dataclass
class Change:
    selector: str
    budget: str
    kind: str  # regression | improvement | moved (after a spec change) | new | dropped | incomparable | spec
    metric: str  # arp_v1 | osc_v1 | status | benchmarks | a spec field (finetune.lr)
    before: float | str | None
    after: float | str | None
    delta: float | None
    threshold: float | None
    detail: str


def night_rows(board: pd.DataFrame, night: str, run: str, spec_hash: str | None, commit: str | None,
               benchmarks: Sequence[str] = ()) -> pd.DataFrame:
    cols = ["selector", "budget", "seed", "status", "reason", ARP_VERSION, OSC_VERSION]
    rows = board[[c for c in cols if c in board.columns]].copy()
    rows = rows[rows["selector"] != REFERENCE]
    rows.insert(0, "night", night)
    rows.insert(1, "run", run)
    rows["spec_hash"], rows["commit"] = spec_hash, commit
    rows["benchmarks"] = ",".join(benchmarks)
    rows[ARP_VERSION] = pd.to_numeric(rows[ARP_VERSION], errors="coerce")
    rows[OSC_VERSION] = pd.to_numeric(rows.get(OSC_VERSION), errors="coerce")
    rows["reason"] = rows["reason"].astype(object).where(rows["reason"].notna(), None)
    return rows.reset_index(drop=True)


def _cell_stats(rows: pd.DataFrame) -> dict[tuple[str, str], dict]:
    """Per (selector, budget): done over all seeds, ARP mean and variance over seeds, OSC mean."""
    out = {}
    for key, g in rows.groupby(KEY, sort=False):
        done = bool((g["status"] == "done").all())
        a, o = aggregate(g, ARP_VERSION), aggregate(g, OSC_VERSION)
        out[key] = {
            "done": done, "n": len(g), "arp": a.mean if done else None,
            "var": a.std ** 2 if done and a.std is not None else None,
            "osc": o.mean if done else None,
            "reason": "; ".join(str(r) for r in g["reason"] if isinstance(r, str)) or None,
        }
    return out


def pooled_seed_std(*stats: dict) -> float | None:
    num = den = 0.0
    for s in stats:
        for c in s.values():
            if c["var"] is not None:
                num += c["var"] * (c["n"] - 1)
                den += c["n"] - 1
    return math.sqrt(num / den) if den else None


Paired = dict[tuple[str, str], PairedDifference]


def paired_changes(prev_items: pd.DataFrame | None, cur_items: pd.DataFrame | None, columns: Sequence[Column],
                   replicates: int = 1000, seed: int = 0, confidence: float = 0.95) -> Paired:
    """Per cell present in both nights with item outcomes for every seed: the paired bootstrap of its ARP change
    (both nights answer the same items, so a regression shows with one seed)."""
    if prev_items is None or cur_items is None or prev_items.empty or cur_items.empty or not columns:
        return {}
    (prev, prev_ref), (cur, cur_ref) = seed_runs(prev_items), seed_runs(cur_items)
    if not prev_ref or not cur_ref or not _pairable(prev_ref, cur_ref):
        return {}
    out: Paired = {}
    for key in cur:
        if key in prev and len(prev[key]) == len(cur[key]) and _pairable(prev[key], cur[key]):
            out[key] = paired_difference(prev[key], cur[key], columns, prev_ref, cur_ref, replicates=replicates,
                                         seed=seed, confidence=confidence)
    return out


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _pairable(before: Sequence[dict], after: Sequence[dict]) -> bool:
    """Whether two nights' outcomes of one cell can be paired: every benchmark both nights have holds the same
    outcome kind over the same items. Not so after a change of how outcomes are recorded (lmms-eval's POPE tasks
    moved from POPE's rule to lmms-eval's) or of a benchmark's items: that cell falls back to the seed-noise rule."""
    for b, a in zip(before, after):
        for bench in b.keys() & a.keys():
            x, y = b[bench], a[bench]
            if x.kind != y.kind or (x.ids != y.ids and set(x.ids) != set(y.ids)):
                return False
    return True


def compare(previous: pd.DataFrame, current: pd.DataFrame, th: Thresholds = Thresholds(),
            paired: Paired | None = None) -> list[Change]:
    """Per (selector, budget): ARP and OSC deltas beyond noise, status flips, new and dropped cells. Where
    ``paired`` has the cell (item outcomes on both nights), its ARP verdict is the paired bootstrap's: a change
    when the CI of the ARP difference excludes 0; otherwise the seed-noise rule above."""
    paired = paired or {}
    prev, cur = _cell_stats(previous), _cell_stats(current)
    s = pooled_seed_std(prev, cur)
    changes: list[Change] = []
    for key in [*cur, *[k for k in prev if k not in cur]]:
        sel, budget = key
        p, c = prev.get(key), cur.get(key)
        if p is None:
            assert c is not None  # the key came from one of the two nights
            changes.append(Change(sel, budget, "new", "status", None, "done" if c["done"] else "failed", None,
                                  None, "no cell last night"))
            continue
        if c is None:
            changes.append(Change(sel, budget, "dropped", "status", "done" if p["done"] else "failed", None, None,
                                  None, "cell not in tonight's spec"))
            continue
        if p["done"] and not c["done"]:
            changes.append(Change(sel, budget, "regression", "status", "done", "failed", None, None,
                                  c["reason"] or "failed"))
            continue
        if not p["done"] and c["done"]:
            changes.append(Change(sel, budget, "improvement", "status", "failed", "done", None, None,
                                  "completes again"))
        if c["done"] and c["arp"] is None and p["arp"] is not None:  # N/A propagates: a lost ARP is never "unchanged"
            changes.append(Change(sel, budget, "regression", ARP_VERSION, p["arp"], None, None, None,
                                  f"ARP {p['arp']:.1f} → N/A (a column or a seed's value is missing, or the "
                                  f"reference scored 0)"))
        elif p["done"] and p["arp"] is None and c["arp"] is not None:
            changes.append(Change(sel, budget, "improvement", ARP_VERSION, None, c["arp"], None, None,
                                  f"ARP N/A → {c['arp']:.1f}"))
        if p["arp"] is not None and c["arp"] is not None and key in paired and paired[key].arp.point is not None:
            # significant by the paired bootstrap, or beyond the fixed tolerance (as without item outcomes)
            pd_ = paired[key]
            d = c["arp"] - p["arp"]
            if pd_.changed or abs(d) > th.arp_tolerance:
                ci = f"[{pd_.arp.low:+.1f}, {pd_.arp.high:+.1f}]" if pd_.arp.low is not None else "n/a"
                changes.append(Change(sel, budget, "regression" if d < 0 else "improvement", ARP_VERSION,
                                      p["arp"], c["arp"], d, th.arp_tolerance,
                                      f"ARP {p['arp']:.1f} → {c['arp']:.1f} ({d:+.1f}; paired bootstrap over items: "
                                      f"{pd_.confidence * 100:g} % CI {ci}, p = {_p(pd_.arp_p_value)}; tolerance "
                                      f"±{th.arp_tolerance:.1f})"))
        elif p["arp"] is not None and c["arp"] is not None:
            noise = th.z * s * math.sqrt(1 / p["n"] + 1 / c["n"]) if s is not None else 0.0
            limit = max(th.arp_tolerance, noise)
            d = c["arp"] - p["arp"]
            if abs(d) > limit:
                changes.append(Change(sel, budget, "regression" if d < 0 else "improvement", ARP_VERSION,
                                      p["arp"], c["arp"], d, limit,
                                      f"ARP {p['arp']:.1f} → {c['arp']:.1f} ({d:+.1f}; threshold ±{limit:.1f})"))
        if p["osc"] and c["osc"] is not None:
            rel = c["osc"] / p["osc"] - 1
            if abs(rel) > th.osc_tolerance:
                changes.append(Change(sel, budget, "regression" if rel > 0 else "improvement", OSC_VERSION,
                                      p["osc"], c["osc"], c["osc"] - p["osc"], th.osc_tolerance,
                                      f"OSC {p['osc']:.2f} → {c['osc']:.2f} ({rel:+.0%}; threshold "
                                      f"±{th.osc_tolerance:.0%})"))
    return changes


ORDER = ("incomparable", "spec", "regression", "improvement", "moved", "new", "dropped")  # how changes are listed


def _order(c: Change | dict) -> int:
    kind = c.kind if isinstance(c, Change) else c.get("kind")
    return ORDER.index(kind) if kind in ORDER else len(ORDER)


def _moved(c: Change) -> Change:
    """After a spec change an ARP or OSC delta measures the spec, not the code: shown, never counted. An ARP that
    turns N/A (or comes back) is no delta: like a failed cell, it counts whatever changed."""
    if c.kind in ("regression", "improvement") and c.metric in (ARP_VERSION, OSC_VERSION) and c.delta is not None:
        return Change(c.selector, c.budget, "moved", c.metric, c.before, c.after, c.delta, c.threshold,
                      f"{c.detail}, after the spec change")
    return c


# ------------------------------------------------------------------------------------------- spec changes

IGNORED = ("store", "display")  # where the results live and how the tables name things: no number depends on them
_ABSENT = "—"


def _flatten(value: object, prefix: str, out: dict[str, object]) -> dict[str, object]:
    """Nested mappings (and lists of mappings) → ``a.b.c`` paths; lists of plain values stay whole."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}{k}.", out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}{i}.", out)
    else:
        out[prefix[:-1]] = value
    return out


def _spec_fields(spec: dict) -> dict[str, object]:
    spec = {k: v for k, v in spec.items() if k not in IGNORED}
    sels = spec.get("selectors")
    if isinstance(sels, list):  # by label, so adding a selector in front does not shift every other one
        spec["selectors"] = {str(s.get("label") or s.get("name")): s for s in sels if isinstance(s, dict)}
    return _flatten(spec, "", {})


def shown(value: object) -> str:
    if value is _ABSENT or isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, default=str)


def spec_changes(before: dict, after: dict) -> list[tuple[str, str, str]]:
    """Every field that differs between two nights' specs (``store`` and ``display`` aside): (path, before, after),
    e.g. ("finetune.lr", "0.0005", "0.001")."""
    a, b = _spec_fields(before), _spec_fields(after)
    return [(k, shown(a.get(k, _ABSENT)), shown(b.get(k, _ABSENT))) for k in sorted(set(a) | set(b))
            if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


# ----------------------------------------------------------------------------------------------- the night

def night_date(stamp: str) -> str:
    """``20261120T030000Z`` (or ``…Z-3``, a second night in the same second) → ``2026-11-20 03:00 UTC``."""
    try:
        return dt.datetime.strptime(stamp[:16], "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return stamp


FILES = {"leaderboard": "leaderboard.parquet", "items": ITEMS, "spec": "spec.json", "report": "report.html",
         "log": "run.log"}


def night_files(history_dir: Path, night: str) -> dict[str, str]:
    """Where a night's files are, relative to the history folder (an unchanged file is the earlier night's)."""
    try:
        files = json.loads((history_dir / "nights" / night / "comparison.json").read_text()).get("files")
    except (OSError, ValueError):
        files = None
    if isinstance(files, dict):
        return {k: str(v) for k, v in files.items()}
    return {k: f"nights/{night}/{name}" for k, name in FILES.items()  # a history from before the files map
            if (history_dir / "nights" / night / name).exists()}


def _keep(history_dir: Path, folder: Path, key: str, data: bytes, previous: dict[str, str]) -> str:
    """Write ``data`` into tonight's folder unless the previous night's file holds exactly it (then that one
    stays the copy, unwritten); return the path that holds it, relative to the history folder."""
    prev = previous.get(key)
    if prev and (history_dir / prev).is_file() and (history_dir / prev).read_bytes() == data:
        return prev
    path = folder / FILES[key]
    path.write_bytes(data)
    return path.relative_to(history_dir).as_posix()


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


@dataclass
class NightlyResult:
    run: str
    night: str
    previous: str | None
    changes: list[Change]
    history: Path
    page: Path
    cells: int = 0  # tonight's cells (selector × budget)

    @property
    def folder(self) -> Path:
        return self.history.parent / "nights" / self.night

    def _of(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    @property
    def regressions(self) -> list[Change]:
        return self._of("regression")

    @property
    def spec(self) -> list[Change]:
        return self._of("spec")

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    def verdict(self) -> str:
        """One line that says it all: what happened, to how many cells, which night against which, the exit code."""
        def cells(kind: str) -> list[str]:
            return list(dict.fromkeys(f"{c.selector} @ {c.budget}" for c in self._of(kind)))

        def some(names: list[str]) -> str:
            return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")

        bad, good, moved = cells("regression"), cells("improvement"), cells("moved")
        good = [c for c in good if c not in bad]
        fields = [c.metric for c in self.spec]
        if self.previous is None:
            head = f"FIRST NIGHT: {self.cells} cells recorded, nothing to compare yet"
        elif self._of("incomparable"):
            head = "INCOMPARABLE: the benchmark set changed, so ARP is another quantity; tonight is the new baseline"
        elif bad:
            head = f"REGRESSION: {len(bad)} of {self.cells} cells regressed ({some(bad)})"
            head += f"; {len(good)} improved" if good else ""
            head += f"; spec changed ({some(fields)})" if fields else ""
        elif fields:
            head = (f"SPEC CHANGED ({some(fields)}): {len(moved)} of {self.cells} cells moved, not counted as "
                    "regressions") + (f"; {len(good)} improved" if good else "")
        elif good:
            head = f"IMPROVED: {len(good)} of {self.cells} cells improved ({some(good)}), none regressed"
        else:
            head = f"UNCHANGED: {self.cells} cells, no change beyond noise"
        vs = f" vs {night_date(self.previous)}" if self.previous else ""
        return f"{head} — {self.run}, night {night_date(self.night)}{vs} — exit {self.exit_code}"

    def lines(self) -> list[str]:
        """The verdict, then the spec changes that explain what moved, then every changed cell, worst first."""
        out = [self.verdict()]
        for c in sorted(self.changes, key=_order):
            if c.kind in ("spec", "incomparable"):
                out.append(f"  {c.detail}")
            else:
                out.append(f"  {c.kind}: {c.selector} @ {c.budget}: {c.detail}")
        return out


def load_history(history_dir: Path) -> pd.DataFrame:
    path = history_dir / HISTORY
    if not path.exists():
        return pd.DataFrame()
    try:
        return pd.read_parquet(path)
    except Exception as e:  # a corrupt history must not be silently replaced by tonight alone
        raise ValueError(f"{path}: cannot read the nightly history ({e}); move it aside to start over") from e


def record(history_dir: Path, board: pd.DataFrame, run: str, spec_hash: str | None, commit: str | None,
           th: Thresholds = Thresholds(), now: dt.datetime | None = None, benchmarks: Sequence[str] = (),
           items: pd.DataFrame | None = None, columns: Sequence[Column] = (), spec: dict | None = None,
           report: Path | None = None, log: str | None = None) -> NightlyResult:
    """Compare tonight's leaderboard with the last night of the same run, append it, render the trend page.
    ``spec``: the run folder's spec.json (spec changes are reported as such); ``report``: the run's report page,
    kept per night; ``log``: what the run printed, kept as the night's run.log."""
    history_dir.mkdir(parents=True, exist_ok=True)
    hist = load_history(history_dir)
    night = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    if not hist.empty and night in set(hist["night"]):
        night += f"-{len(set(hist['night']))}"
    mine = hist[hist["run"] == run] if not hist.empty else hist
    previous = sorted(set(mine["night"]))[-1] if not mine.empty else None
    tonight = night_rows(board, night, run, spec_hash, commit, benchmarks)
    last = mine[mine["night"] == previous] if previous else mine
    prev_files = night_files(history_dir, previous) if previous else {}
    changes: list[Change] = []
    if previous and spec is not None and "spec" in prev_files:
        before_spec = json.loads((history_dir / prev_files["spec"]).read_text())
        changes += [Change("*", "*", "spec", key, a, b, None, None, f"spec changed: {key} {a} → {b}")
                    for key, a, b in spec_changes(before_spec, spec)]
    before = str(last["benchmarks"].iloc[0]) if previous and "benchmarks" in last and len(last) else ""
    if previous and before and benchmarks and before != ",".join(benchmarks):
        # ARP over another benchmark set is another quantity: no deltas tonight, it starts a new baseline
        changes.append(Change("*", "*", "incomparable", "benchmarks", before, ",".join(benchmarks), None, None,
                              "the benchmark set changed, so ARP is not comparable with the previous night"))
    elif previous:
        prev_items = history_dir / prev_files["items"] if "items" in prev_files else None
        stats = (spec or {}).get("statistics") or {}  # the spec's bootstrap settings, as its report uses them
        paired = paired_changes(pd.read_parquet(prev_items) if prev_items and prev_items.exists() else None,
                                items, columns, replicates=int(stats.get("replicates", 1000)),
                                seed=int(stats.get("seed", 0)), confidence=float(stats.get("confidence", 0.95)))
        cell_changes = compare(last, tonight, th, paired)
        changes += [_moved(c) for c in cell_changes] if changes else cell_changes
    folder = history_dir / "nights" / night
    folder.mkdir(parents=True, exist_ok=True)
    files = {"leaderboard": _keep(history_dir, folder, "leaderboard", _parquet(board), prev_files)}
    if items is not None:  # tomorrow's paired comparison needs tonight's item outcomes
        files["items"] = _keep(history_dir, folder, "items", _parquet(items), prev_files)
    if spec is not None:
        files["spec"] = _keep(history_dir, folder, "spec", json.dumps(spec, indent=1, default=str).encode(),
                              prev_files)
    if report is not None and report.is_file():
        files["report"] = _keep(history_dir, folder, "report", report.read_bytes(), prev_files)
    if log is not None:
        files["log"] = _keep(history_dir, folder, "log", log.encode(), prev_files)
    result = NightlyResult(run, night, previous, changes, history_dir / HISTORY, history_dir / "index.html",
                           cells=len(tonight[KEY].drop_duplicates()))
    (folder / "comparison.json").write_text(json.dumps(
        {"night": night, "run": run, "previous": previous, "date": night_date(night), "commit": commit,
         "spec_hash": spec_hash, "verdict": result.verdict(), "exit_code": result.exit_code, "cells": result.cells,
         "thresholds": asdict(th), "files": files, "changes": [asdict(c) for c in changes]}, indent=1, default=str))
    hist = pd.concat([hist, tonight], ignore_index=True) if not hist.empty else tonight
    tmp = history_dir / f".{HISTORY}.tmp-{os.getpid()}"
    hist.to_parquet(tmp, index=False)
    tmp.replace(history_dir / HISTORY)
    render_trend(history_dir, hist, run)
    return result


# ----------------------------------------------------------------------------------------------- trend page

RELEVANT = {"arp": {ARP_VERSION, "status"}, "osc": {OSC_VERSION, "status"}}  # which changes mark a table's cell
PRIORITY = ("regression", "improvement", "moved", "new")


def _night_info(history_dir: Path, night: str, rows: pd.DataFrame) -> dict:
    try:
        doc = json.loads((history_dir / "nights" / night / "comparison.json").read_text())
    except (OSError, ValueError):
        doc = {}
    commits = [c for c in rows["commit"] if isinstance(c, str) and c] if "commit" in rows else []
    files = night_files(history_dir, night)
    changes = sorted(doc.get("changes") or [], key=_order)
    return {"stamp": night, "date": night_date(night), "commit": commits[0][:12] if commits else "—",
            "verdict": str(doc.get("verdict") or "—").split(" — ")[0], "verdict_line": doc.get("verdict") or "—",
            "exit_code": doc.get("exit_code"),
            "report": files.get("report"), "log": files.get("log"), "comparison": f"nights/{night}/comparison.json",
            "spec": [c["detail"] for c in changes if c.get("kind") == "spec"], "changes": changes}


def _metric_rows(metric: str, nights: list[str], stats: dict[str, dict], infos: dict[str, dict]) -> list[dict]:
    """One row per cell: per night its mean (or the failure and its reason), marked where that night changed it."""
    cells = list(dict.fromkeys(k for n in nights for k in stats[n]))
    rows = []
    for key in cells:
        values = []
        for n in nights:
            s = stats[n].get(key)
            marks = [c for c in infos[n]["changes"] if (c.get("selector"), c.get("budget")) == key
                     and c.get("metric") in RELEVANT[metric]]
            kind = next((k for k in PRIORITY if any(c.get("kind") == k for c in marks)), "")
            title = "; ".join(f"{c['kind']}: {c['detail']}" for c in marks)
            if s is None:
                values.append({"text": "—", "cls": "absent", "reason": "", "title": "not in this night's spec"})
            elif not s["done"] or s[metric] is None:
                reason = s["reason"] or ("failed" if not s["done"] else "missing benchmark or reference")
                values.append({"text": "failed" if not s["done"] else "N/A", "cls": f"na {kind}".strip(),
                               "reason": reason if len(reason) <= 80 else reason[:77] + "…",
                               "title": "; ".join(t for t in (reason, title) if t)})
            else:
                digits = 1 if metric == "arp" else 2
                values.append({"text": f"{s[metric]:.{digits}f}", "cls": kind, "reason": "", "title": title})
        rows.append({"cell": f"{key[0]} @ {key[1]}", "values": values})
    return rows


def _trend_figure(history_dir: Path, nights: list[str], stats: dict[str, dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selbench.reports.plots import MARKERS, selector_styles, text

    cells = list(dict.fromkeys(k for n in nights for k in stats[n]))
    colours = selector_styles(list(dict.fromkeys(sel for sel, _ in cells)))
    budgets = list(dict.fromkeys(b for _, b in cells))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, metric, label in ((axes[0], "arp", f"ARP ({ARP_VERSION})"), (axes[1], "osc", f"OSC ({OSC_VERSION})")):
        for sel, budget in cells:
            ys = [stats[n].get((sel, budget), {}).get(metric) for n in nights]
            ax.plot(range(len(nights)), [math.nan if y is None else y for y in ys], color=colours[sel].colour,
                    marker=MARKERS[budgets.index(budget) % len(MARKERS)], label=text(f"{sel} @ {budget}"))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.set_xticks(range(len(nights)), [night_date(n)[5:16] for n in nights], rotation=30, ha="right", fontsize=7)
    if cells:
        axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    png = history_dir / "trend.png"
    fig.savefig(png, dpi=110, bbox_inches="tight")
    fig.savefig(history_dir / "trend.svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return png


def render_trend(history_dir: Path, hist: pd.DataFrame, run: str) -> Path:
    """The trend page: the latest verdict and changes, every night (date, commit, verdict, spec changes, links to
    its report, comparison and run log), and ARP and OSC per cell and night with changed cells marked and failure
    reasons shown."""
    from selbench.reports.html import environment, write_atomic

    mine = hist[hist["run"] == run]
    nights = sorted(set(mine["night"]))
    stats = {n: _cell_stats(mine[mine["night"] == n]) for n in nights}
    infos = {n: _night_info(history_dir, n, mine[mine["night"] == n]) for n in nights}
    png = _trend_figure(history_dir, nights, stats)
    latest = infos[nights[-1]] if nights else None
    html = environment().get_template("trend.html.j2").render(
        run=run, latest=latest, nights=[infos[n] for n in reversed(nights)], dates=[infos[n]["date"] for n in nights],
        tables=[("arp", f"ARP ({ARP_VERSION}) per night", _metric_rows("arp", nights, stats, infos)),
                ("osc", f"OSC ({OSC_VERSION}) per night", _metric_rows("osc", nights, stats, infos))],
        image=base64.b64encode(png.read_bytes()).decode())
    return write_atomic(history_dir / "index.html", html)
