"""The report's tables, built from a run's results: a small format-neutral model (``Table`` of ``Cell``) that the
HTML, LaTeX, Markdown and CSV writers all render, so every format shows the same numbers.

Tables (each keyed by the file stem it is exported under):
- ``arp``: ARP leaderboard, selectors × budgets under a pool header (XMAS Table 3 layout), mean ± std over
  seeds, best per column marked;
- ``benchmarks-<budget>``: one per budget, selectors × benchmarks + Rel. (ScalSelect Table 1 layout), the
  full-data reference first;
- ``time``: selection time split into feature extraction / proxy training / scoring, subset fine-tuning, OSC,
  GPU-hours and device (time / OSC leaderboard);
- ``lineage``: per cell the spec hash, commit, versions and links to every job's ``meta.json``.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from selbench.evaluators.protocols import Column, columns_for
from selbench.evaluators.relative import ARP_VERSION, OSC_VERSION
from selbench.leaderboard import REFERENCE, leaderboard
from selbench.leaderboard.intervals import RANDOM, Intervals, intervals

ITEMS_FILE = "items.parquet"  # per-item outcomes of every cell (the harness's collect step)

NA = "N/A"


@dataclass
class Cell:
    text: str
    value: float | None = None  # the number behind the text (mean over seeds), for CSV and best-marking
    std: float | None = None
    best: bool = False
    note: str | None = None  # why a cell is N/A (failure reason), shown as a tooltip / footnote
    href: str | None = None
    low: float | None = None  # the bootstrap confidence interval of ``value``
    high: float | None = None
    p: float | None = None  # a p-value (difference to random), for CSV


@dataclass
class Table:
    key: str
    title: str
    caption: str
    header: list[str]
    rows: list[list[Cell]]
    groups: list[tuple[str, int]] = field(default_factory=list)  # column-group header: (label, span)
    split: int = 0  # the first `split` rows are references, ruled off from the selectors


@dataclass
class RunData:
    name: str
    run_dir: Path
    spec: dict
    columns: list[Column]  # the protocol's columns (or one per benchmark)
    results: pd.DataFrame
    timings: pd.DataFrame
    board: pd.DataFrame
    intervals: Intervals | None = None  # bootstrap CIs, tie groups, differences to random (None: no item outcomes)
    decimals: int = 1  # digits of the scores and ARPs in every table (papers print one or two)

    @property
    def pool(self) -> str:
        world = self.spec.get("world")
        if world:
            return f"embedded world (seed {world['seed']}, {world['samples']:,} samples)"
        pool = self.spec.get("pool") or {}
        return Path(str(pool.get("path", "pool"))).stem

    @property
    def fingerprint(self) -> str | None:
        """The pool's fingerprint as the prepare stage computed it (None for runs recorded before it)."""
        col = self.timings.get("pool_fingerprint") if not self.timings.empty else None
        values = {v for v in col.dropna()} if col is not None else set()
        return values.pop() if len(values) == 1 else None


def load_run(run_dir: str | Path, decimals: int = 1) -> RunData:
    """A run folder as written by the harness: ``results.parquet``, ``timings.parquet``, ``spec.json``."""
    run_dir = Path(run_dir)
    files = {n: run_dir / n for n in ("results.parquet", "timings.parquet", "spec.json")}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a run folder: missing {', '.join(missing)} "
                                "(run `selbench run SPEC` first; run folders live under STORE/runs/NAME)")
    spec = json.loads(files["spec.json"].read_text())
    items = pd.read_parquet(run_dir / ITEMS_FILE) if (run_dir / ITEMS_FILE).exists() else None
    return from_frames(pd.read_parquet(files["results.parquet"]), pd.read_parquet(files["timings.parquet"]),
                       spec, run_dir, items, decimals)


def from_frames(results: pd.DataFrame, timings: pd.DataFrame, spec: dict, run_dir: Path,
                items: pd.DataFrame | None = None, decimals: int = 1) -> RunData:
    columns = columns_for(spec.get("protocol"), list(spec["benchmarks"]))
    board = leaderboard(results, timings, columns)
    stats = spec.get("statistics") or {}
    ci = intervals(board, items, columns, random_label=random_label(spec), **stats) if items is not None else None
    return RunData(spec["name"], Path(run_dir), spec, columns, results, timings, board, ci, decimals)


def random_label(spec: dict) -> str | None:
    """The display label of the spec's random selector (the baseline of every difference), if it has one."""
    for sel in spec.get("selectors") or []:
        if sel.get("name") == RANDOM and not sel.get("impl"):
            return str(sel.get("label") or sel["name"])
    return None


# ----------------------------------------------------------------------------------------------- ordering

def budget_key(label: str) -> tuple[int, float]:
    """Fractions ("10%") in numeric order, then counts ("100000")."""
    if label.endswith("%"):
        return (0, float(label[:-1]))
    try:
        return (1, float(label))
    except ValueError:
        return (2, 0.0)


def budget_fraction(label: str, pool_size: int | None = None) -> float | None:
    if label.endswith("%"):
        return float(label[:-1]) / 100.0
    if pool_size and re.fullmatch(r"\d+", label):
        return int(label) / pool_size
    return None


def selectors_in_order(run: RunData) -> list[str]:
    """The spec's order (display labels), the reference excluded."""
    seen = list(dict.fromkeys(run.board["selector"]))
    return [s for s in seen if s != REFERENCE]


def budgets_in_order(run: RunData) -> list[str]:
    b = run.board[run.board["selector"] != REFERENCE]["budget"]
    return sorted(set(b), key=budget_key)


# ------------------------------------------------------------------------------------------- aggregation

@dataclass
class Agg:
    mean: float | None
    std: float | None  # None for a single seed
    n: int
    note: str | None = None


def aggregate(rows: pd.DataFrame, column: str) -> Agg:
    """Mean ± sample std over seeds. Any seed without a value makes the whole cell N/A (never a partial mean)."""
    if rows.empty:
        return Agg(None, None, 0, "not run")
    vals = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in rows[column]]
    if any(v is None for v in vals):
        bad = rows[[v is None for v in vals]]
        reasons = []
        for _, r in bad.iterrows():
            why = r.get("reason") if r.get("status") != "done" else None
            why = why if isinstance(why, str) and why else (r.get("status") if r.get("status") != "done"
                                                            else "missing benchmark or reference")
            reasons.append(f"seed {r['seed']}: {why}")
        return Agg(None, None, len(vals), "; ".join(reasons))
    nums = [v for v in vals if v is not None]  # all of them, after the check above
    return Agg(statistics.fmean(nums), statistics.stdev(nums) if len(nums) > 1 else None, len(nums))


def fmt(a: Agg, digits: int = 1) -> Cell:
    if a.mean is None:
        return Cell(NA, note=a.note)
    text = f"{a.mean:.{digits}f}" + (f" ± {a.std:.{digits}f}" if a.std is not None else "")
    return Cell(text, a.mean, a.std)


def mark_best(cells: Iterable[Cell], higher: bool = True) -> None:
    cells = [c for c in cells if c.value is not None]
    if not cells:
        return
    best = max(c.value for c in cells) if higher else min(c.value for c in cells)  # type: ignore[type-var]
    for c in cells:
        c.best = c.value == best


# ----------------------------------------------------------------------------------------------- tables

def arp_table(run: RunData) -> Table:
    budgets, board, d = budgets_in_order(run), run.board, run.decimals
    rows = []
    ref = board[board["selector"] == REFERENCE]
    rows.append([Cell("Full data (reference)")] + [Cell(f"{100:.{d}f}", 100.0) if not ref.empty and (
        ref["status"] == "done").all() else Cell(NA, note="reference not done") for _ in budgets])
    for sel in selectors_in_order(run):
        row = [Cell(sel)]
        for b in budgets:
            agg = aggregate(board[(board["selector"] == sel) & (board["budget"] == b)], ARP_VERSION)
            row.append(_with_ci(run, fmt(agg, d), sel, b))
        rows.append(row)
    seeds = sorted(set(board["seed"]))
    if run.intervals is None:
        for j in range(1, len(budgets) + 1):
            mark_best([r[j] for r in rows[1:]])
        over = f"mean ± std over seeds {seeds}" if len(seeds) > 1 else f"seed {seeds[0]}"
        claims = "best per budget in bold"
    else:
        over = f"mean over seeds {seeds}" if len(seeds) > 1 else f"seed {seeds[0]}"
        claims = _ci_caption(run)
    return Table("arp", "ARP leaderboard",
                 f"Average relative performance ({ARP_VERSION}: mean over {len(run.columns)} {_columns_word(run)} of "
                 f"value / full-data value × 100), {over}; {claims}; N/A when any column or seed is missing.",
                 ["Selector", *budgets], rows, groups=[("", 1), (run.pool, len(budgets))], split=1)


SIGNIFICANT = "†"  # marks a cell whose ARP differs from random's at the same budget (CI of the difference ∌ 0)


def _ci_caption(run: RunData) -> str:
    ci = run.intervals
    assert ci is not None
    pct = f"{ci.confidence * 100:g} %"
    vs = (f"; {SIGNIFICANT}: differs from {ci.random_label} at the same budget ({pct} CI of the difference "
          "excludes 0)") if ci.random_label else ""
    return (f"[{pct} CI] from a paired bootstrap over benchmark items (and seeds), {ci.replicates} replicates, "
            f"seed {ci.seed}; bold: not separable from the best at its budget (tie group){vs}")


def _interval_row(run: RunData, selector: str, budget: str) -> pd.Series | None:
    return run.intervals.cell(selector, budget) if run.intervals is not None else None


def _with_ci(run: RunData, cell: Cell, selector: str, budget: str) -> Cell:
    """An ARP cell with its bootstrap CI, bold when in the best's tie group, † when it differs from random."""
    r = _interval_row(run, selector, budget)
    if r is None or cell.value is None or _missing(r.get("arp_low")):
        return cell
    d = run.decimals
    cell.low, cell.high = float(r["arp_low"]), float(r["arp_high"])
    cell.text = f"{cell.text} [{cell.low:.{d}f}, {cell.high:.{d}f}]"
    cell.best = bool(r.get("tie_best"))
    if not _missing(r.get("vs_random_low")) and (r["vs_random_low"] > 0 or r["vs_random_high"] < 0):
        cell.text += SIGNIFICANT
    return cell


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def significance_table(run: RunData) -> Table | None:
    """Per budget: each selector's ARP with its CI, rank range, tie group and difference to random."""
    ci = run.intervals
    if ci is None:
        return None
    d, rows = run.decimals, []
    for budget in budgets_in_order(run):
        for sel in selectors_in_order(run):
            r = _interval_row(run, sel, budget)
            if r is None or _missing(r.get("arp")):
                rows.append([Cell(budget), Cell(sel), Cell(NA), Cell(NA), Cell(NA), Cell(NA), Cell("—")])
                continue
            arp = Cell(f"{r['arp']:.{d}f} [{r['arp_low']:.{d}f}, {r['arp_high']:.{d}f}]", float(r["arp"]),
                       low=float(r["arp_low"]), high=float(r["arp_high"]), best=bool(r["tie_best"]))
            if _missing(r.get("vs_random")):
                diff, pval = Cell("—"), Cell("—")
            else:
                sig = SIGNIFICANT if (r["vs_random_low"] > 0 or r["vs_random_high"] < 0) else ""
                lo, hi, dv = (float(r[k]) + 0.0 for k in ("vs_random_low", "vs_random_high", "vs_random"))  # no -0.0
                diff = Cell(f"{dv:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}]{sig}", dv, low=lo, high=hi,
                            p=float(r["vs_random_p"]))
                pval = Cell(f"{r['vs_random_p']:.3f}", float(r["vs_random_p"]))
            rank = Cell(f"{int(r['rank'])} ({int(r['rank_low'])}–{int(r['rank_high'])})", float(r["rank"]))
            rows.append([Cell(budget), Cell(sel), arp, diff, pval, rank, Cell("yes" if r["tie_best"] else "no")])
    pct = f"{ci.confidence * 100:g} %"
    return Table("significance", "Uncertainty: CIs, ranks and differences to random",
                 f"ARP with its {pct} CI; Δ = ARP − {ci.random_label or 'random'}'s ARP at the same budget with its "
                 f"{pct} CI and two-sided bootstrap p-value ({SIGNIFICANT}: the CI excludes 0); rank of the point "
                 f"ARP with its {pct} range over replicates; tie: not separable from the best at its budget. Paired "
                 f"bootstrap over benchmark items (and seeds), {ci.replicates} replicates, seed {ci.seed}.",
                 ["Budget", "Selector", "ARP [CI]", f"Δ vs {ci.random_label or 'random'} [CI]", "p",
                  "Rank (range)", "Tie with best"], rows)


def pools_table(runs: list[RunData]) -> Table:
    """XMAS Table 3 across runs: one column group per run (its pool), budgets under each, ARP per selector.
    Selectors are matched by label; a selector absent from a run shows N/A there."""
    selectors = list(dict.fromkeys(s for r in runs for s in selectors_in_order(r)))
    header, groups = ["Selector"], [("", 1)]
    for r in runs:
        budgets = budgets_in_order(r)
        header += budgets
        groups.append((f"{r.pool} ({r.name})", len(budgets)))
    rows = []
    for sel in selectors:
        row = [Cell(sel)]
        for r in runs:
            for b in budgets_in_order(r):
                part = r.board[(r.board["selector"] == sel) & (r.board["budget"] == b)]
                row.append(fmt(aggregate(part, ARP_VERSION)) if len(part) else Cell(NA, note="not in this run"))
        rows.append(row)
    for j in range(1, len(header)):
        mark_best([r[j] for r in rows])
    return Table("arp-pools", "ARP across pools",
                 f"ARP ({ARP_VERSION}) per pool and budget, each pool relative to its own full-data reference; "
                 "best per column in bold.", header, rows, groups=groups)


def _columns_word(run: RunData) -> str:
    protocol = run.spec.get("protocol")
    return f"{protocol} columns" if protocol else "benchmarks"


def _column_source(run: RunData) -> str:
    protocol = run.spec.get("protocol")
    return f"Columns of protocol {protocol}" if protocol else "Primary metric per benchmark"


def benchmark_tables(run: RunData) -> list[Table]:
    board, out = run.board, []
    names = [c.label for c in run.columns]
    ref = board[board["selector"] == REFERENCE]
    for budget in budgets_in_order(run):
        d = run.decimals
        rows = [[Cell("Full data")] + [fmt(_scaled(aggregate(ref, c.key), c), d) for c in run.columns]
                + [Cell(f"{100:.{d}f}", 100.0) if not ref.empty and (ref["status"] == "done").all() else Cell(NA)]]
        for sel in selectors_in_order(run):
            part = board[(board["selector"] == sel) & (board["budget"] == budget)]
            rows.append([Cell(sel)] + [fmt(_scaled(aggregate(part, c.key), c), d) for c in run.columns]
                        + [_with_ci(run, fmt(aggregate(part, ARP_VERSION), d), sel, budget)])
        for j in range(1, len(run.columns) + (1 if run.intervals is not None else 2)):
            mark_best([r[j] for r in rows[1:]])
        key = "benchmarks-" + re.sub(r"[^0-9A-Za-z]+", "", budget.replace("%", "pct"))
        out.append(Table(key, f"Per-benchmark results at budget {budget}",
                         f"{_column_source(run)} (× 100 for 0–1 metrics) and Rel. = ARP ({ARP_VERSION}); "
                         f"{budget} of the pool; best per column among selectors in bold.",
                         ["Method", *names, "Rel."], rows, split=1))
    return out


def time_table(run: RunData) -> Table:
    board, rows = run.board, []
    ref = board[board["selector"] == REFERENCE]
    cols = ["feature_extraction_s", "proxy_training_s", "scoring_s", "selection_s", "finetune_s", OSC_VERSION,
            "gpu_hours"]
    ref_ft = aggregate(ref, "finetune_s")
    rows.append([Cell("Full data"), Cell("—"), Cell("—"), Cell("—"), Cell("—"), fmt(ref_ft),
                 Cell("1.00", 1.0), fmt(aggregate(ref, "gpu_hours"), 3), Cell(_device(ref))])
    osc_cells: dict[str, list[Cell]] = {}
    for sel in selectors_in_order(run):
        for budget in budgets_in_order(run):
            part = board[(board["selector"] == sel) & (board["budget"] == budget)]
            cells = [fmt(aggregate(part, c), 3 if c == "gpu_hours" else (2 if c == OSC_VERSION else 1))
                     for c in cols]
            osc_cells.setdefault(budget, []).append(cells[5])
            rows.append([Cell(f"{sel} @ {budget}"), *cells, Cell(_device(part))])
    for cells in osc_cells.values():
        mark_best(cells, higher=False)
    return Table("time", "Time / OSC leaderboard",
                 f"Seconds (wall) per stage, mean over seeds. Selection = feature extraction + proxy training + "
                 f"scoring + loading and ranking (the selector's whole score and select jobs). OSC ({OSC_VERSION}) "
                 "= (selection + subset fine-tuning) / full fine-tuning; lowest per budget in bold.",
                 ["Cell", "Feature extraction (s)", "Proxy training (s)", "Scoring (s)", "Selection total (s)",
                  "Fine-tuning (s)", "OSC", "GPU-hours", "Device"], rows, split=1)


def lineage_table(run: RunData, link_base: str = "../../../jobs") -> Table:
    rows = []
    for _, r in run.board.iterrows():
        jobs = []
        for stage in ("prepare", "score", "select", "finetune", "evaluate"):
            jid = r.get(f"{stage}_job")
            if isinstance(jid, str) and jid:
                jobs.append(Cell(stage, href=f"{link_base}/{jid}/meta.json", note=jid))
        status = Cell(str(r["status"]), note=r["reason"] if isinstance(r.get("reason"), str) else None)
        rows.append([Cell(str(r["selector"])), Cell(str(r["budget"])), Cell(str(r["seed"])), status,
                     Cell(str(r.get("spec_hash") or "")), Cell(str(r.get("commit") or "")[:12]),
                     Cell(" ".join(f"{k} {r.get(k)}" for k in ("selbench", "torch", "transformers")
                                   if isinstance(r.get(k), str))), *jobs])
    header = ["Selector", "Budget", "Seed", "Status", "Spec", "Commit", "Versions"]
    width = max((len(r) for r in rows), default=len(header))
    if width > len(header):  # one column per linked job, under one "Jobs" heading
        header += ["Jobs"] + [""] * (width - len(header) - 1)
    for r in rows:
        r.extend(Cell("") for _ in range(width - len(r)))
    return Table("lineage", "Lineage",
                 "Every cell's spec hash, code commit and versions; the links open each stage's meta.json "
                 "(config, upstream jobs, environment, timings) in the artifact store.", header, rows)


def all_tables(run: RunData) -> list[Table]:
    sig = significance_table(run)
    return [arp_table(run), *([sig] if sig else []), *benchmark_tables(run), time_table(run), lineage_table(run)]


def _scaled(a: Agg, column: Column) -> Agg:
    k = column.display_factor
    return Agg(None if a.mean is None else a.mean * k, None if a.std is None else a.std * k, a.n, a.note)


def _device(rows: pd.DataFrame) -> str:
    devs = sorted({str(d) for d in rows.get("device", pd.Series(dtype=object)).dropna()})
    return ", ".join(devs) if devs else "—"
