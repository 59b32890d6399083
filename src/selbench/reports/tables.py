"""The report's tables, built from a run's results: a small format-neutral model (``Table`` of ``Cell``) that the
HTML, LaTeX, Markdown and CSV writers all render, so every format shows the same numbers.

Tables (each keyed by the file stem it is exported under):
- ``arp``: ARP leaderboard, selectors × budgets under a pool header (XMAS Table 3 layout), a #Samples row (the
  subset size per budget), mean ± std over seeds, best per column marked;
- ``benchmarks-<budget>``: one per budget, selectors × #Samples, benchmarks and Rel. (ScalSelect Tables 1–2
  layout), the full-data reference first (then the untuned target, when the run has it);
- ``time``: per cell #Samples, selection time split into feature extraction / proxy training / scoring, the
  whole selection, subset fine-tuning, OSC and GPU-hours (time / OSC leaderboard; the device in the caption, or a
  column when cells ran on different devices);
- ``lineage``: per cell the status, spec hash, commit, versions and each stage's job (linked to its ``meta.json``).

Sanity references (spec ``references``): the oracle and anti-oracle subsets follow the selectors in every budget
table, ruled off (``Table.tail``) and never marked best, ranked or timed (they select with the world's ground
truth, at no cost worth comparing); the untuned target has no budget: a row under the full-data reference in the
per-benchmark tables, and a sentence in the ARP table's caption.

Selectors and columns are printed under their display names (``display_names``): the spec's ``display`` section,
else the papers' names (random → Random, xmas → XMAS, emb_vqa → VQA; a protocol's columns keep their paper labels).
Lookups stay on the run's own labels; only the printed text changes (the lineage table prints the run's labels:
they are what results.parquet holds).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from selbench.evaluators.protocols import Column, columns_for
from selbench.evaluators.relative import ARP_VERSION, OSC_VERSION
from selbench.leaderboard import REFERENCE, SANITY, UNTUNED, UNTUNED_BUDGET, leaderboard, role
from selbench.leaderboard.intervals import RANDOM, Intervals, intervals
from selbench.selectors.base import Budget, SelectionError

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
    full: str | None = None  # the whole text where the table prints it abbreviated (a job id, a commit), for CSV


@dataclass
class Table:
    key: str
    title: str
    caption: str
    header: list[str]
    rows: list[list[Cell]]
    groups: list[tuple[str, int]] = field(default_factory=list)  # column-group header: (label, span)
    split: int = 0  # the first `split` rows are references, ruled off from the selectors
    tail: int = 0  # the last `tail` rows are sanity references, ruled off after the selectors (never ranked)
    align: str = ""  # LaTeX column types, one letter per column (default: the first left, the rest right)


# ------------------------------------------------------------------------------------------ display names

# The papers' names for the built-in selectors (XMAS, COINCIDE and ScalSelect write them so).
SELECTOR_NAMES = {"random": "Random", "length": "Length", "perplexity": "Perplexity", "coincide": "COINCIDE",
                  "prism": "PRISM", "xmas": "XMAS", "scalselect": "ScalSelect"}
REFERENCE_NAME = "Full data"
SANITY_NAMES = {"oracle": "Oracle (reference)", "anti-oracle": "Anti-oracle (reference)",
                UNTUNED: "Untuned (no fine-tuning)"}
SANITY_SUBSETS = tuple(s for s in SANITY if s != UNTUNED)  # the sanity references that select a subset per budget
# Columns of a spec that lists benchmarks without a protocol are keyed by benchmark name; a protocol's columns
# already carry the paper's label (VQAv2, MME-P, POPE-A …). The embedded benchmarks get short names of what they test.
COLUMN_NAMES = {
    "vqav2": "VQAv2", "gqa": "GQA", "vizwiz": "VizWiz", "textvqa": "TextVQA", "scienceqa_img": "SQA-I",
    "pope": "POPE", "pope_random": "POPE-R", "pope_pop": "POPE-Pop", "pope_adv": "POPE-Adv", "mme": "MME-P",
    "mmbench_en": "MMBench", "mmbench_cn": "MMBench-Cn", "ai2d": "AI2D", "ocrbench": "OCRBench", "mmvet": "MM-Vet",
    "llava_bench": "LLaVA-Bench", "mmmu": "MMMU",
    "emb_vqa": "VQA", "emb_mc": "MC", "emb_pope": "POPE", "emb_count": "Count", "emb_ocr": "OCR",
}


@dataclass(frozen=True)
class DisplayNames:
    selectors: dict[str, str]  # the run's label (``full`` for the reference) → printed name
    columns: dict[str, str]  # column key → printed name


def display_names(spec: dict, columns: list[Column]) -> DisplayNames:
    """The spec's ``display`` names, else the defaults above. A selector with a label of its own (or an ``impl``)
    keeps it; two selectors that would print alike keep their labels (a table must tell them apart)."""
    chosen = spec.get("display") or {}
    by_sel, by_col = chosen.get("selectors") or {}, chosen.get("columns") or {}
    sel: dict[str, str] = {}
    for s in spec.get("selectors") or []:
        name = str(s["name"])
        label = str(s.get("label") or name)
        own = label != name or s.get("impl")
        sel[label] = by_sel.get(label) or by_sel.get(name) or (label if own else SELECTOR_NAMES.get(name, label))
    named = {str(s["name"]) for s in spec.get("selectors") or []} | set(sel) | {REFERENCE, *SANITY}
    sel.update({label: shown for label, shown in by_sel.items() if label not in named})  # runs without a list
    printed = list(sel.values())
    sel = {label: shown if printed.count(shown) == 1 else label for label, shown in sel.items()}
    sel[REFERENCE] = by_sel.get(REFERENCE) or REFERENCE_NAME
    sel.update({s: by_sel[s] for s in SANITY if by_sel.get(s)})  # else SANITY_NAMES (``RunData.selector_name``)
    cols = {c.key: by_col.get(c.key) or (c.label if c.label != c.key else COLUMN_NAMES.get(c.key, c.label))
            for c in columns}
    return DisplayNames(sel, cols)


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
    names: DisplayNames = field(default_factory=lambda: DisplayNames({}, {}))
    pool_samples: int | None = None  # the pool's size (None: unknown), for #Samples

    def selector_name(self, label: str) -> str:
        """The name the tables print for a selector label of this run (``full``: the reference)."""
        return self.names.selectors.get(label, REFERENCE_NAME if label == REFERENCE else SANITY_NAMES.get(label, label))

    def column_name(self, column: Column) -> str:
        return self.names.columns.get(column.key, column.label)

    def samples(self, budget: str) -> int | None:
        """The subset size a budget resolves to in this run's pool (a count needs no pool size)."""
        try:
            b = Budget.parse(budget)
            if isinstance(b.value, int):
                return b.value
            return b.resolve(self.pool_samples) if self.pool_samples else None
        except SelectionError:
            return None

    @property
    def pool(self) -> str:
        named = (self.spec.get("display") or {}).get("pool")
        if named:
            return str(named)
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
    return RunData(spec["name"], Path(run_dir), spec, columns, results, timings, board, ci, decimals,
                   display_names(spec, columns), pool_samples(Path(run_dir), timings, spec))


def pool_samples(run_dir: Path, timings: pd.DataFrame, spec: dict) -> int | None:
    """The pool's size: the prepare job's count of valid samples (its meta.json in the store the run folder
    STORE/runs/NAME belongs to), else the embedded world's size from the spec, else None."""
    jobs = timings.get("prepare_job") if not timings.empty else None
    for jid in dict.fromkeys(jobs.dropna() if jobs is not None else ()):
        meta = run_dir.parent.parent / "jobs" / str(jid) / "meta.json"
        try:
            n = json.loads(meta.read_text()).get("n_samples")
        except (OSError, ValueError):
            continue
        if isinstance(n, int) and n > 0:
            return n
    world = spec.get("world") or {}
    n = world.get("samples")
    return n if isinstance(n, int) and n > 0 else None


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
    """Every row of a budget table: the selectors in the spec's order (display labels), then the sanity subsets.
    Never the reference nor the untuned target (they have no budget)."""
    return ranked_in_order(run) + sanity_in_order(run)


def ranked_in_order(run: RunData) -> list[str]:
    """The selectors proper, in the spec's order: what best marks, ranks, costs and Pareto fronts are about."""
    return [s for s in dict.fromkeys(run.board["selector"]) if role(s) == "selector"]


def sanity_in_order(run: RunData) -> list[str]:
    """The run's sanity subsets (oracle, then anti-oracle): shown beside the selectors, never ranked with them."""
    present = set(run.board["selector"])
    return [s for s in SANITY_SUBSETS if s in present]


def budgets_in_order(run: RunData) -> list[str]:
    b = run.board[~run.board["selector"].isin([REFERENCE, UNTUNED])]["budget"]
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

SAMPLES = "#Samples"


def samples_cell(run: RunData, budget: str | None) -> Cell:
    """A subset's size (``budget`` None: the whole pool), as papers print it in a #Samples column."""
    n = run.pool_samples if budget is None else run.samples(budget)
    return Cell(f"{n:,}", float(n)) if n else Cell("—", note="the pool's size is not recorded")


def _reference_done(board: pd.DataFrame) -> bool:
    ref = board[board["selector"] == REFERENCE]
    return not ref.empty and bool((ref["status"] == "done").all())


def _pool_words(run: RunData) -> str:
    return f"a {run.pool_samples:,}-sample pool" if run.pool_samples else "the pool (its size is not recorded)"


def arp_table(run: RunData) -> Table:
    budgets, board, d = budgets_in_order(run), run.board, run.decimals
    rows = [[Cell(SAMPLES)] + [samples_cell(run, b) for b in budgets]]
    rows.append([Cell(run.selector_name(REFERENCE))] + [Cell(f"{100:.{d}f}", 100.0) if _reference_done(board)
                                                        else Cell(NA, note="reference not done") for _ in budgets])
    for sel in selectors_in_order(run):
        row = [Cell(run.selector_name(sel))]
        for b in budgets:
            agg = aggregate(board[(board["selector"] == sel) & (board["budget"] == b)], ARP_VERSION)
            row.append(_with_ci(run, fmt(agg, d), sel, b))
        rows.append(row)
    tail = len(sanity_in_order(run))
    seeds = sorted(set(board["seed"]))
    if run.intervals is None:
        for j in range(1, len(budgets) + 1):
            mark_best([r[j] for r in rows[2:len(rows) - tail]])
        over = f"mean ± std over seeds {seeds}" if len(seeds) > 1 else f"seed {seeds[0]}"
        claims = "best per budget in bold"
    else:
        over = f"mean over seeds {seeds}" if len(seeds) > 1 else f"seed {seeds[0]}"
        claims = _ci_caption(run)
        bare = [b for j, b in enumerate(budgets, 1) if _best_without_ci([r[j] for r in rows[2:len(rows) - tail]])]
        if bare:
            claims += f"; at {', '.join(bare)}, {NO_CI_BOLD}"
    return Table("arp", "ARP leaderboard",
                 f"Average relative performance ({ARP_VERSION}: mean over {len(run.columns)} {_columns_word(run)} of "
                 f"value / full-data value × 100), {over}; {claims}; N/A when any column or seed is missing. "
                 f"{SAMPLES}: the subset each budget selects from {_pool_words(run)}.{_sanity_note(run)}"
                 f"{_untuned_note(run)}",
                 ["Selector", *budgets], rows, groups=[("", 1), (run.pool, len(budgets))], split=2, tail=tail)


def _sanity_note(run: RunData) -> str:
    """For a caption: what the sanity subsets below the rule are ("" when the run has none)."""
    subsets = sanity_in_order(run)
    if not subsets:
        return ""
    names = " and ".join(run.selector_name(s) for s in subsets)
    return (f" Below the selectors, {names}: sanity references, subsets chosen with the embedded world's ground "
            "truth; never ranked nor marked best.")


def _untuned_note(run: RunData) -> str:
    """The untuned target's ARP, for the ARP table's caption: it has no budget, so no column of its own."""
    rows = run.board[run.board["selector"] == UNTUNED]
    if rows.empty:
        return ""
    cell = _with_ci(run, fmt(aggregate(rows, ARP_VERSION), run.decimals), UNTUNED, UNTUNED_BUDGET)
    return f" Untuned target (no fine-tuning): ARP {cell.text}."


SIGNIFICANT = "†"  # marks a cell whose ARP differs from random's at the same budget (CI of the difference ∌ 0)


def _random_name(run: RunData) -> str:
    ci = run.intervals
    return run.selector_name(ci.random_label) if ci is not None and ci.random_label else "random"


def _ci_caption(run: RunData) -> str:
    ci = run.intervals
    assert ci is not None
    pct = f"{ci.confidence * 100:g} %"
    vs = (f"; {SIGNIFICANT}: differs from {_random_name(run)} at the same budget ({pct} CI of the difference "
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
    cell.best = bool(r.get("tie_best")) and role(selector) == "selector"  # a sanity reference is never ranked
    if not _missing(r.get("vs_random_low")) and (r["vs_random_low"] > 0 or r["vs_random_high"] < 0):
        cell.text += SIGNIFICANT
    return cell


NO_CI_BOLD = "where no cell has a CI (a column without per-item outcomes), bold marks the best ARP"


def _best_without_ci(cells: list[Cell]) -> bool:
    """Where none of a budget's selector cells got a CI, the tie group cannot be told: mark the best point value
    instead (so the table still says which cell leads). True when it did."""
    if any(c.low is not None for c in cells):
        return False
    mark_best(cells)
    return any(c.best for c in cells)


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def significance_table(run: RunData) -> Table | None:
    """Per budget: each selector's ARP with its CI, rank range, tie group and difference to random; then the sanity
    subsets' (CI and difference to random, never a rank: they are not in the competition)."""
    ci = run.intervals
    if ci is None:
        return None
    budgets, sanity = budgets_in_order(run), sanity_in_order(run)
    rows = [_significance_row(run, sel, b) for b in budgets for sel in ranked_in_order(run)]
    rows += [_significance_row(run, sel, b) for b in budgets for sel in sanity]
    pct, rnd = f"{ci.confidence * 100:g} %", _random_name(run)
    unranked = (f" Below the selectors, the sanity references {' and '.join(map(run.selector_name, sanity))}: a CI "
                "and Δ, but never ranked (rank and tie —).") if sanity else ""
    return Table("significance", "Uncertainty: CIs, ranks and differences to random",
                 f"ARP with its {pct} CI; Δ = ARP − {rnd}'s ARP at the same budget with its "
                 f"{pct} CI and two-sided bootstrap p-value ({SIGNIFICANT}: the CI excludes 0); rank of the point "
                 f"ARP with its {pct} range over replicates; tie: not separable from the best at its budget. Paired "
                 f"bootstrap over benchmark items (and seeds), {ci.replicates} replicates, seed {ci.seed}.{unranked}",
                 ["Budget", "Selector", "ARP [CI]", f"Δ vs {rnd} [CI]", "p", "Rank (range)", "Tie with best"], rows,
                 tail=len(budgets) * len(sanity))


def _significance_row(run: RunData, sel: str, budget: str) -> list[Cell]:
    d, r = run.decimals, _interval_row(run, sel, budget)
    name = Cell(run.selector_name(sel))
    if r is None or _missing(r.get("arp")):
        return [Cell(budget), name, Cell(NA), Cell(NA), Cell(NA), Cell(NA), Cell("—")]
    ranked = role(sel) == "selector" and not _missing(r.get("rank"))
    arp = Cell(f"{r['arp']:.{d}f} [{r['arp_low']:.{d}f}, {r['arp_high']:.{d}f}]", float(r["arp"]),
               low=float(r["arp_low"]), high=float(r["arp_high"]), best=ranked and bool(r["tie_best"]))
    if _missing(r.get("vs_random")):
        diff, pval = Cell("—"), Cell("—")
    else:
        sig = SIGNIFICANT if (r["vs_random_low"] > 0 or r["vs_random_high"] < 0) else ""
        lo, hi, dv = (float(r[k]) + 0.0 for k in ("vs_random_low", "vs_random_high", "vs_random"))  # no -0.0
        diff = Cell(f"{dv:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}]{sig}", dv, low=lo, high=hi, p=float(r["vs_random_p"]))
        pval = Cell(f"{r['vs_random_p']:.3f}", float(r["vs_random_p"]))
    if not ranked:
        return [Cell(budget), name, arp, diff, pval, Cell("—"), Cell("—")]
    rank = Cell(f"{int(r['rank'])} ({int(r['rank_low'])}–{int(r['rank_high'])})", float(r["rank"]))
    return [Cell(budget), name, arp, diff, pval, rank, Cell("yes" if r["tie_best"] else "no")]


def pools_table(runs: list[RunData]) -> Table:
    """XMAS Table 3 across runs: one column group per run (its pool), budgets under each, ARP per selector.
    Selectors are matched by label; a selector absent from a run shows N/A there. The sanity subsets come last."""
    seen = list(dict.fromkeys(s for r in runs for s in selectors_in_order(r)))
    sanity = [s for s in seen if s in SANITY]
    selectors = [s for s in seen if s not in SANITY] + sanity
    header, groups = ["Selector"], [("", 1)]
    for r in runs:
        budgets = budgets_in_order(r)
        header += budgets
        groups.append((f"{r.pool} ({r.name})", len(budgets)))
    rows = [[Cell(SAMPLES)] + [samples_cell(r, b) for r in runs for b in budgets_in_order(r)]]
    for sel in selectors:
        named = next(r for r in runs if sel in selectors_in_order(r))
        row = [Cell(named.selector_name(sel))]
        for r in runs:
            for b in budgets_in_order(r):
                part = r.board[(r.board["selector"] == sel) & (r.board["budget"] == b)]
                row.append(fmt(aggregate(part, ARP_VERSION), r.decimals) if len(part)
                           else Cell(NA, note="not in this run"))
        rows.append(row)
    for j in range(1, len(header)):
        mark_best([r[j] for r in rows[1:len(rows) - len(sanity)]])
    return Table("arp-pools", "ARP across pools",
                 f"ARP ({ARP_VERSION}) per pool and budget, each pool relative to its own full-data reference; "
                 f"best per column in bold. {SAMPLES}: the subset each budget selects from its pool."
                 f"{' Sanity references below the selectors, never marked best.' if sanity else ''}", header, rows,
                 groups=groups, split=1, tail=len(sanity))


def _columns_word(run: RunData) -> str:
    protocol = run.spec.get("protocol")
    return f"{protocol} columns" if protocol else "benchmarks"


def _column_source(run: RunData) -> str:
    protocol = run.spec.get("protocol")
    return f"Columns of protocol {protocol}" if protocol else "Primary metric per benchmark"


def benchmark_tables(run: RunData) -> list[Table]:
    board, out = run.board, []
    names = [run.column_name(c) for c in run.columns]
    ref, untuned = board[board["selector"] == REFERENCE], board[board["selector"] == UNTUNED]
    tail = len(sanity_in_order(run))
    for budget in budgets_in_order(run):
        d = run.decimals
        rows = [[Cell(run.selector_name(REFERENCE)), samples_cell(run, None)]
                + [fmt(_scaled(aggregate(ref, c.key), c), d) for c in run.columns]
                + [Cell(f"{100:.{d}f}", 100.0) if _reference_done(board) else Cell(NA)]]
        if not untuned.empty:  # the floor the fine-tuning starts from: the full reference should beat it everywhere
            rows.append(_benchmark_row(run, UNTUNED, UNTUNED_BUDGET, untuned, Cell("0", 0.0)))
        split = len(rows)
        for sel in selectors_in_order(run):
            part = board[(board["selector"] == sel) & (board["budget"] == budget)]
            rows.append(_benchmark_row(run, sel, budget, part, samples_cell(run, budget)))
        for j in range(2, len(run.columns) + (2 if run.intervals is not None else 3)):
            mark_best([r[j] for r in rows[split:len(rows) - tail]])
        bare = run.intervals is not None and _best_without_ci([r[-1] for r in rows[split:len(rows) - tail]])
        key = "benchmarks-" + re.sub(r"[^0-9A-Za-z]+", "", budget.replace("%", "pct"))
        below = (f" {run.selector_name(UNTUNED)}: the target before any fine-tuning ({SAMPLES} 0)."
                 if not untuned.empty else "")
        out.append(Table(key, f"Per-benchmark results at budget {budget}",
                         f"{_column_source(run)} (× 100 for 0–1 metrics) and Rel. = ARP ({ARP_VERSION}); "
                         f"{budget} of {_pool_words(run)} ({SAMPLES}); best per column among selectors in bold"
                         f"{'; Rel.: ' + NO_CI_BOLD if bare else ''}.{below}{_sanity_note(run)}",
                         ["Method", SAMPLES, *names, "Rel."], rows, split=split, tail=tail))
    return out


def _benchmark_row(run: RunData, sel: str, budget: str, part: pd.DataFrame, samples: Cell) -> list[Cell]:
    d = run.decimals
    return ([Cell(run.selector_name(sel)), samples] + [fmt(_scaled(aggregate(part, c.key), c), d) for c in run.columns]
            + [_with_ci(run, fmt(aggregate(part, ARP_VERSION), d), sel, budget)])


TIME_PARTS = {  # leaderboard column → header (seconds, wall)
    "feature_extraction_s": "Extraction", "proxy_training_s": "Proxy", "scoring_s": "Scoring",
    "selection_s": "Selection", "finetune_s": "Fine-tune",
}


def time_table(run: RunData) -> Table:
    """The selectors' costs; no sanity reference (it selects with the ground truth: a cost that compares nothing)."""
    board, rows, budgets = run.board, [], budgets_in_order(run)
    ref = board[board["selector"] == REFERENCE]
    cells = [(sel, b, board[(board["selector"] == sel) & (board["budget"] == b)])
             for sel in ranked_in_order(run) for b in budgets]
    devices = sorted(({_device(part) for *_, part in cells} | {_device(ref)}) - {"—"})
    per_cell = len(devices) > 1  # one device: the caption says it; several: a column
    rows.append([Cell(run.selector_name(REFERENCE)), Cell("100%"), samples_cell(run, None),
                 Cell("—"), Cell("—"), Cell("—"), Cell("—"), fmt(aggregate(ref, "finetune_s")), Cell("1.00", 1.0),
                 fmt(aggregate(ref, "gpu_hours"), 3), *([Cell(_device(ref))] if per_cell else [])])
    osc_cells: dict[str, list[Cell]] = {}
    for sel, budget, part in cells:
        spent = [_mean_only(fmt(aggregate(part, c))) for c in TIME_PARTS]
        osc = fmt(aggregate(part, OSC_VERSION), 2)
        osc_cells.setdefault(budget, []).append(osc)
        rows.append([Cell(run.selector_name(sel)), Cell(budget), samples_cell(run, budget), *spent, osc,
                     _mean_only(fmt(aggregate(part, "gpu_hours"), 3)), *([Cell(_device(part))] if per_cell else [])])
    for group in osc_cells.values():
        mark_best(group, higher=False)
    where = "" if per_cell else (f" Measured on {devices[0]}." if devices else "")
    return Table("time", "Time / OSC leaderboard",
                 "Seconds (wall) per stage, mean over seeds (OSC ± std; the CSV has every std): feature extraction, "
                 "proxy training and scoring, and Selection = all of the selector's score and select jobs (those "
                 f"three plus loading and ranking); fine-tuning on the subset. OSC ({OSC_VERSION}) = (selection + "
                 f"fine-tuning) / full fine-tuning; lowest per budget in bold. GPU-h: GPU-hours of the cell.{where}",
                 ["Method", "Budget", SAMPLES, *TIME_PARTS.values(), "OSC", "GPU-h", *(["Device"] if per_cell else [])],
                 rows, split=1, align="llr" + "r" * (len(TIME_PARTS) + 2) + ("l" if per_cell else ""))


STAGES = {"prepare": "Prepare", "score": "Score", "select": "Select", "finetune": "Fine-tune", "evaluate": "Evaluate"}
SHORT = 8  # hex digits of a hash or commit the lineage table prints (the CSV and the links keep them whole)


def lineage_table(run: RunData, link_base: str = "../../../jobs") -> Table:
    """One row per cell, a column per stage: the stage's job (its id's hash, abbreviated; the whole id as the
    note) linked to its meta.json, "—" for a stage the cell does not have (the reference selects nothing). The
    spec hash and the versions, when every cell shares them (one run: the usual case), go into the caption."""
    board = run.board

    def shared(text: Callable[[pd.Series], str]) -> str | None:
        values = {text(r) for _, r in board.iterrows()}
        return values.pop() if len(values) == 1 else None

    versions = lambda r: " ".join(f"{k} {r.get(k)}" for k in ("selbench", "torch", "transformers")  # noqa: E731
                                  if isinstance(r.get(k), str))
    spec_hash = lambda r: str(r.get("spec_hash") or "")  # noqa: E731
    same_spec, same_versions = shared(spec_hash), shared(versions)
    rows = []
    for _, r in board.iterrows():
        jobs = []
        for stage in STAGES:
            jid = r.get(f"{stage}_job")
            if isinstance(jid, str) and jid:
                jobs.append(Cell(jid.removeprefix(f"{stage}-")[:SHORT], href=f"{link_base}/{jid}/meta.json", note=jid,
                                 full=jid))
            else:
                jobs.append(Cell("—"))
        status = Cell(str(r["status"]), note=r["reason"] if isinstance(r.get("reason"), str) else None)
        rows.append([Cell(str(r["selector"])), Cell(str(r["budget"])), Cell(str(r["seed"])), status,
                     *([] if same_spec is not None else [Cell(spec_hash(r)[:SHORT], full=spec_hash(r))]),
                     Cell(str(r.get("commit") or "")[:SHORT], full=str(r.get("commit") or "")),
                     *([] if same_versions is not None else [Cell(versions(r))]), *jobs])
    common = "".join([f" Spec hash {same_spec}." if same_spec else "",
                      f" Versions: {same_versions}." if same_versions else ""])
    header = ["Selector", "Budget", "Seed", "Status", *(["Spec"] if same_spec is None else []), "Commit",
              *(["Versions"] if same_versions is None else []), *STAGES.values()]
    return Table("lineage", "Lineage",
                 "Every cell under the run's own selector labels: its status, code commit, and per stage the job "
                 "that made it (its id without the stage, abbreviated; the CSV has whole ids). STORE/jobs/ID/"
                 "meta.json holds the job's config, upstream jobs, environment and timings; the HTML and Markdown "
                 f"tables link to it.{common}", header, rows, align="l" * len(header))


def all_tables(run: RunData) -> list[Table]:
    sig = significance_table(run)
    tables = [arp_table(run), *([sig] if sig else []), *benchmark_tables(run), time_table(run), lineage_table(run)]
    note = subset_note(run)
    for t in tables:
        t.caption += note
    return tables


def subset_note(run: RunData) -> str:
    """For every caption, when any benchmark ran on a seeded item subset (``evaluation.limit``): which, and how many
    of its items ("" when none did)."""
    if "subset" not in run.results.columns:
        return ""
    subsets = run.results.dropna(subset=["subset"])[["benchmark", "subset"]].drop_duplicates()
    if subsets.empty:
        return ""
    parts = [f"{b} {s}" for b, s in sorted(subsets.itertuples(index=False, name=None))]
    return f" Seeded item subsets, not whole benchmarks: {'; '.join(parts)}."


def _mean_only(c: Cell) -> Cell:
    """The mean alone (its std kept for the CSV): a time table of ± columns would not fit a page."""
    if c.value is not None:
        c.text = c.text.split(" ± ")[0]
    return c


def _scaled(a: Agg, column: Column) -> Agg:
    k = column.display_factor
    return Agg(None if a.mean is None else a.mean * k, None if a.std is None else a.std * k, a.n, a.note)


def _device(rows: pd.DataFrame) -> str:
    devs = sorted({str(d) for d in rows.get("device", pd.Series(dtype=object)).dropna()})
    return ", ".join(devs) if devs else "—"
