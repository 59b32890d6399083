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

History layout (``--history DIR``): ``history.parquet`` (one row per night × cell), ``nights/<stamp>/`` with the
night's leaderboard and ``comparison.json``, and ``index.html``, the trend page.
"""

from __future__ import annotations

import base64
import datetime as dt
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
    kind: str  # regression | improvement | new | dropped | incomparable
    metric: str  # arp_v1 | osc_v1 | status
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
                   replicates: int = 1000, seed: int = 0) -> Paired:
    """Per cell present in both nights with item outcomes for every seed: the paired bootstrap of its ARP change
    (both nights answer the same items, so a regression shows with one seed)."""
    if prev_items is None or cur_items is None or prev_items.empty or cur_items.empty or not columns:
        return {}
    (prev, prev_ref), (cur, cur_ref) = seed_runs(prev_items), seed_runs(cur_items)
    if not prev_ref or not cur_ref:
        return {}
    out: Paired = {}
    for key in cur:
        if key in prev and len(prev[key]) == len(cur[key]):
            out[key] = paired_difference(prev[key], cur[key], columns, prev_ref, cur_ref, replicates=replicates,
                                         seed=seed)
    return out


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
        if p["arp"] is not None and c["arp"] is not None and key in paired and paired[key].arp.point is not None:
            # significant by the paired bootstrap, or beyond the fixed tolerance (as without item outcomes)
            pd_ = paired[key]
            d = c["arp"] - p["arp"]
            if pd_.changed or abs(d) > th.arp_tolerance:
                ci = f"[{pd_.arp.low:+.1f}, {pd_.arp.high:+.1f}]" if pd_.arp.low is not None else "n/a"
                changes.append(Change(sel, budget, "regression" if d < 0 else "improvement", ARP_VERSION,
                                      p["arp"], c["arp"], d, th.arp_tolerance,
                                      f"ARP {p['arp']:.1f} → {c['arp']:.1f} ({d:+.1f}; paired bootstrap over items: "
                                      f"{pd_.confidence * 100:g} % CI {ci}, p = {pd_.arp_p_value:.3g}; tolerance "
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


@dataclass
class NightlyResult:
    night: str
    previous: str | None
    changes: list[Change]
    history: Path
    page: Path

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.kind == "regression"]


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
           items: pd.DataFrame | None = None, columns: Sequence[Column] = ()) -> NightlyResult:
    """Compare tonight's leaderboard with the last night of the same run, append it, render the trend page."""
    history_dir.mkdir(parents=True, exist_ok=True)
    hist = load_history(history_dir)
    night = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    if not hist.empty and night in set(hist["night"]):
        night += f"-{len(set(hist['night']))}"
    mine = hist[hist["run"] == run] if not hist.empty else hist
    previous = sorted(set(mine["night"]))[-1] if not mine.empty else None
    tonight = night_rows(board, night, run, spec_hash, commit, benchmarks)
    last = mine[mine["night"] == previous] if previous else mine
    before = str(last["benchmarks"].iloc[0]) if previous and "benchmarks" in last and len(last) else ""
    if previous and before and benchmarks and before != ",".join(benchmarks):
        # ARP over another benchmark set is another quantity: no deltas tonight, it starts a new baseline
        changes = [Change("*", "*", "incomparable", "benchmarks", before, ",".join(benchmarks), None, None,
                          "the benchmark set changed, so ARP is not comparable with the previous night")]
    else:
        prev_items = history_dir / "nights" / previous / ITEMS if previous else None
        paired = paired_changes(pd.read_parquet(prev_items) if prev_items and prev_items.exists() else None,
                                items, columns)
        changes = compare(last, tonight, th, paired) if previous else []
    nights = history_dir / "nights" / night
    nights.mkdir(parents=True, exist_ok=True)
    board.to_parquet(nights / "leaderboard.parquet", index=False)
    if items is not None:  # tomorrow's paired comparison needs tonight's item outcomes
        items.to_parquet(nights / ITEMS, index=False)
    (nights / "comparison.json").write_text(json.dumps(
        {"night": night, "run": run, "previous": previous, "thresholds": asdict(th),
         "changes": [asdict(c) for c in changes]}, indent=1, default=str))
    hist = pd.concat([hist, tonight], ignore_index=True) if not hist.empty else tonight
    tmp = history_dir / f".{HISTORY}.tmp-{os.getpid()}"
    hist.to_parquet(tmp, index=False)
    tmp.replace(history_dir / HISTORY)
    page = render_trend(history_dir, hist, run, night, previous, changes)
    return NightlyResult(night, previous, changes, history_dir / HISTORY, page)


def render_trend(history_dir: Path, hist: pd.DataFrame, run: str, night: str, previous: str | None,
                 changes: list[Change]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selbench.reports.html import environment, write_atomic
    from selbench.reports.plots import text

    mine = hist[hist["run"] == run]
    nights = sorted(set(mine["night"]))
    means = mine.groupby(["night", *KEY], sort=False)[ARP_VERSION].mean().reset_index()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for (sel, budget), g in means.groupby(KEY, sort=False):
        g = g.set_index("night").reindex(nights)
        ax.plot(range(len(nights)), g[ARP_VERSION], marker="o", label=text(f"{sel} @ {budget}"))
    ax.set_xticks(range(len(nights)), nights, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"ARP ({ARP_VERSION})")
    ax.grid(alpha=0.3)
    if len(means):
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    png = history_dir / "trend.png"
    fig.savefig(png, dpi=110, bbox_inches="tight")
    fig.savefig(history_dir / "trend.svg", bbox_inches="tight")
    plt.close(fig)
    table = means.pivot_table(index=KEY, columns="night", values=ARP_VERSION, sort=False, dropna=False)
    rows = [{"cell": f"{sel} @ {budget}",
             "values": ["N/A" if pd.isna(table.loc[(sel, budget)].get(n)) else f"{table.loc[(sel, budget)][n]:.1f}"
                        for n in nights]} for sel, budget in table.index]
    html = environment().get_template("trend.html.j2").render(
        run=run, night=night, previous=previous, changes=changes, nights=nights, rows=rows,
        image=base64.b64encode(png.read_bytes()).decode())
    return write_atomic(history_dir / "index.html", html)
