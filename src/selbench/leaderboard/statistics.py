"""Uncertainty for the leaderboard: per-item sufficient statistics and a paired, hierarchical percentile bootstrap.

**Per-item statistics.** A (cell, benchmark) keeps an ``ItemStats``: the item ids and a float matrix
``X [n_items, k]`` whose *column sums* determine every metric of that benchmark through a function
``g(sums)``. Resampling items then only changes the sums, ``sums = W @ X`` with ``W [R, n]`` the replicates' item
counts, so corpus-level metrics (POPE's F1, MME's paired score) are recomputed exactly on every replicate, not
approximated by averaging per-item scores. The layouts live in ``STAT_KINDS`` (``mean``, ``pope``, ``pope_lmms``,
``mme``).

**Bootstrap** (``bootstrap``). Every cell and the full-data reference answer the same benchmark items, so one
multinomial resample of each benchmark's items is shared by all of them on a replicate — the *paired* bootstrap
(Koehn 2004, "Statistical significance tests for machine translation evaluation"; Berg-Kirkpatrick et al. 2012, "An
empirical investigation of statistical significance in NLP"): item difficulty cancels in relative performance and in
differences between cells, which is what makes a small difference separable. Where a cell has several training
seeds, the seeds are resampled too (the *hierarchical* or two-stage bootstrap for nested data: Davison & Hinkley
1997, *Bootstrap Methods and their Application*, §3.8; Field & Welsh 2007): draw S seeds with replacement, average
over the drawn seeds, so the interval carries seed noise as well as item noise. Seed draws depend only on the number
of seeds, so cells with the same seed count share them — seed *i* of one cell is paired with seed *i* of another,
which carries a shared seed effect (the same fine-tuning order) when seed numbers mean the same run and, when they
do not, has the same expected variance for a difference as independent draws. With few seeds the seed part is
optimistic: a resample of S values sees (S − 1)/S of their variance (3 seeds: 10 distinct resamples). Intervals are
*percentile* intervals (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13) over the finite
replicates; p-values are two-sided and the inverse of that interval, ``2·min(#{d* ≤ 0}+1, #{d* ≥ 0}+1)/(R+1)``
capped at 1 (Davison & Hinkley 1997, §4.4, with the +1 that keeps a p-value from a finite resample above 0).

**N/A.** A cell without a column's benchmark (in any of its seeds), or whose point value is undefined, has that
column and its ARP as None — never a partial mean (``arp_v1``). A replicate on which a metric is undefined
(a zero denominator) is NaN; it makes that replicate's ARP NaN, and every interval says how many replicates were
finite. Same inputs and seed → bit-identical results (each random stream is keyed by the seed and the
benchmark name or seed count, not by call order).

**Use.** Build one ``ItemStats`` per evaluated (checkpoint, benchmark) from the per-sample log::

    vqa = ItemStats.from_scores(question_ids, exact_match_scores)           # kind "mean"
    pope = ItemStats.from_pope(question_ids, [yes_no(p) == "yes" for p in preds], [g == "yes" for g in golds])
    mme = ItemStats.from_mme(image_ids, categories, scores)                 # one entry per question
    res = bootstrap({("prism", "10%"): [{"vqa": vqa, "pope": pope, "mme": mme}]},   # one mapping per seed
                    [reference_stats], protocol.columns, replicates=1000, seed=0)
    res.cells[("prism", "10%")].arp            # Estimate(point, low, high, finite)
    res.pair(("prism", "10%"), ("random", "10%"))  # ARP difference: CI and p-value
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from selbench.evaluators.items import MME_BLOCK, MME_COGNITION, MME_PERCEPTION, MME_SUBTASKS, mme_rows
from selbench.evaluators.protocols import Column

CellKey = tuple[str, str]  # (selector, budget)
MetricFn = Callable[[np.ndarray], np.ndarray]  # column sums [R, k] → metric values [R] (NaN where undefined)

# ----------------------------------------------------------------------------------------------- statistic kinds


@dataclass(frozen=True)
class StatKind:
    """A layout of per-item statistics and the metrics it determines."""

    name: str
    width: int  # k, the number of statistics per item
    layout: str  # what each column holds
    metric_fn: Callable[[str, np.ndarray], MetricFn]  # (metric name, full-data column sums [k]) → g
    metrics: tuple[str, ...] = ()  # the names metric_fn knows (empty: any name)

    def metric(self, name: str, totals: np.ndarray) -> MetricFn:
        if self.metrics and name not in self.metrics:
            raise ValueError(f"statistics of kind {self.name!r} do not determine metric {name!r}; "
                             f"known: {', '.join(self.metrics)}")
        return self.metric_fn(name, totals)


def _ratio(num: np.ndarray, den: np.ndarray, undefined: float = np.nan) -> np.ndarray:
    """num / den, ``undefined`` where den == 0 (NaN: an undefined metric on that replicate, never a crash or a
    warning; lmms-eval's POPE aggregates give 0 there)."""
    ok = den != 0
    return np.where(ok, num / np.where(ok, den, 1.0), undefined)


def _mean_metric(name: str, totals: np.ndarray) -> MetricFn:
    # Any name: a "mean" ItemStats holds the per-item score of the one metric it was built from.
    return lambda s: _ratio(s[:, 0], s[:, 1])


_POPE_FORMULAS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "accuracy": lambda tp, fp, fn, tn: _ratio(tp + tn, tp + fp + fn + tn),
    "precision": lambda tp, fp, fn, tn: _ratio(tp, tp + fp),
    "recall": lambda tp, fp, fn, tn: _ratio(tp, tp + fn),
    # 2PR/(P+R) written on counts: defined whenever any item is a yes (predicted or true)
    "f1": lambda tp, fp, fn, tn: _ratio(2 * tp, 2 * tp + fp + fn),
    "yes_ratio": lambda tp, fp, fn, tn: _ratio(tp + fp, tp + fp + fn + tn),
}
# lmms-eval's names → the embedded evaluator's names (``evaluators.metrics.pope_metrics``)
POPE_METRICS: dict[str, str] = {**{f: f for f in _POPE_FORMULAS}, "pope_accuracy": "accuracy",
                                "pope_precision": "precision", "pope_recall": "recall", "pope_f1_score": "f1",
                                "pope_yes_ratio": "yes_ratio"}


def _pope_metric(name: str, totals: np.ndarray) -> MetricFn:
    formula = _POPE_FORMULAS[POPE_METRICS[name]]
    return lambda s: formula(s[:, 0], s[:, 1], s[:, 2], s[:, 3])


def _precision(s: np.ndarray) -> np.ndarray:
    return _ratio(s[:, 0], s[:, 0] + s[:, 1], 0.0)


def _recall(s: np.ndarray) -> np.ndarray:
    return _ratio(s[:, 0], s[:, 0] + s[:, 2], 0.0)


def _f1(s: np.ndarray) -> np.ndarray:
    p, r = _precision(s), _recall(s)
    return _ratio(2 * p * r, p + r, 0.0)


# lmms-eval's POPE task (``pope_aggregate_*``, 0 where a denominator is 0) on [tp, fp, fn, correct, gold yes, 1]
# (evaluators.items.pope_lmms_row)
_LMMS_POPE_FORMULAS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "pope_accuracy": lambda s: _ratio(s[:, 3], s[:, 5]),
    "pope_precision": _precision,
    "pope_recall": _recall,
    "pope_f1_score": _f1,
    "pope_yes_ratio": lambda s: _ratio(s[:, 4], s[:, 5]),  # lmms-eval's: the share of *gold* yes answers
}


def _lmms_pope_metric(name: str, totals: np.ndarray) -> MetricFn:
    return _LMMS_POPE_FORMULAS[name]


# MME's layout (subtasks in lmms-eval's names, the 4 statistics of a block) is the evaluators' (items.py), which
# writes these rows from lmms-eval's sample log.
MME_METRICS: dict[str, tuple[str, ...]] = {
    "mme_perception_score": MME_PERCEPTION,  # SelBench's registry name
    "mme_percetion_score": MME_PERCEPTION,  # lmms-eval's spelling of the same metric
    "mme_cognition_score": MME_COGNITION,
    "mme_total_score": MME_SUBTASKS,
}


def _mme_metric(name: str, totals: np.ndarray) -> MetricFn:
    """Σ over the group's subtasks of 100·(Σ correct/Σ questions + Σ both/Σ images) — lmms-eval's ``acc + acc_plus``
    per subtask (``mme_aggregate_results``; with two questions per image its per-image mean of acc equals Σ correct
    / Σ questions). Like lmms-eval, only the subtasks that have images in the full data count; which those are is
    fixed from ``totals``, so a replicate that draws none of a present subtask's images is NaN, not a lower score."""
    blocks = [4 * MME_SUBTASKS.index(t) for t in MME_METRICS[name] if totals[4 * MME_SUBTASKS.index(t) + 3] > 0]

    def g(s: np.ndarray) -> np.ndarray:
        out = np.full(s.shape[0], np.nan) if not blocks else np.zeros(s.shape[0])
        for b in blocks:
            out = out + 100.0 * (_ratio(s[:, b], s[:, b + 2]) + _ratio(s[:, b + 1], s[:, b + 3]))
        return out

    return g


STAT_KINDS: dict[str, StatKind] = {}


def register_stat_kind(kind: StatKind) -> None:
    """Add a layout; a name is never redefined (a clash is an error, as for selectors)."""
    if kind.name in STAT_KINDS:
        raise ValueError(f"statistic kind {kind.name!r} is already registered")
    STAT_KINDS[kind.name] = kind


register_stat_kind(StatKind("mean", 2, "[score, w]: metric = Σscore / Σw (exact match, accuracy: w = 1; OCRBench: "
                            "1,000 / n)", _mean_metric))
register_stat_kind(StatKind("pope", 4, "[tp, fp, fn, tn] indicators (positive = yes)", _pope_metric,
                            tuple(POPE_METRICS)))
register_stat_kind(StatKind("pope_lmms", 6, "[tp, fp, fn, correct, gold yes, 1] under lmms-eval's POPE rule (only a "
                            "bare yes / no answers)", _lmms_pope_metric, tuple(_LMMS_POPE_FORMULAS)))
register_stat_kind(StatKind(
    "mme", 4 * len(MME_SUBTASKS),
    "one row per image; block j (columns 4j..4j+3) = subtask MME_SUBTASKS[j]: [correct questions, 1 if all the "
    "image's questions are correct, questions, 1] — zeros for subtasks the image is not in", _mme_metric,
    tuple(MME_METRICS)))

# ----------------------------------------------------------------------------------------------------- ItemStats


@dataclass(frozen=True, eq=False)
class ItemStats:
    """Per-item sufficient statistics of one evaluated benchmark: ``ids[i]`` ↔ row ``stats[i]`` (a read-only
    float64 copy, so a resample can never see a later edit). Every cell must hold the same ids as the reference."""

    kind: str  # a STAT_KINDS name
    ids: tuple[str, ...]
    stats: np.ndarray  # [n_items, STAT_KINDS[kind].width]

    def __post_init__(self) -> None:
        if self.kind not in STAT_KINDS:
            raise ValueError(f"unknown statistic kind {self.kind!r}; known: {', '.join(STAT_KINDS)}")
        ids = tuple(str(i) for i in self.ids)
        stats = np.array(self.stats, dtype=np.float64)  # a copy
        width = STAT_KINDS[self.kind].width
        if stats.ndim != 2 or stats.shape != (len(ids), width):
            raise ValueError(f"{self.kind} statistics must be [{len(ids)} items, {width}], got {stats.shape}")
        if not np.isfinite(stats).all():
            raise ValueError(f"{self.kind} statistics hold non-finite values")
        if len(set(ids)) != len(ids):
            twice = sorted(i for i, n in Counter(ids).items() if n > 1)
            raise ValueError(f"item ids repeat: {', '.join(twice[:5])}" + (" …" if len(twice) > 5 else ""))
        stats.setflags(write=False)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "stats", stats)

    def __len__(self) -> int:
        return len(self.ids)

    def value(self, metric: str) -> float:
        """The metric on the full item set (NaN where undefined)."""
        totals = self.stats.sum(axis=0)
        return float(STAT_KINDS[self.kind].metric(metric, totals)(totals[None, :])[0])

    @classmethod
    def from_scores(cls, ids: Sequence[str], scores: Sequence[float] | np.ndarray) -> ItemStats:
        """Kind ``mean``: one score per item (1/0 for exact match; any per-item score whose mean is the metric)."""
        s = np.asarray(scores, dtype=np.float64)
        return cls("mean", tuple(ids), np.column_stack([s, np.ones_like(s)]))

    @classmethod
    def from_pope(cls, ids: Sequence[str], predicted_yes: Sequence[bool] | np.ndarray,
                  gold_yes: Sequence[bool] | np.ndarray) -> ItemStats:
        """Kind ``pope``: one confusion-matrix indicator row [tp, fp, fn, tn] per question."""
        p, g = np.asarray(predicted_yes, dtype=bool), np.asarray(gold_yes, dtype=bool)
        return cls("pope", tuple(ids), np.column_stack([p & g, p & ~g, ~p & g, ~p & ~g]).astype(np.float64))

    @classmethod
    def from_mme(cls, image_ids: Sequence[str], subtasks: Sequence[str],
                 correct: Sequence[bool] | np.ndarray) -> ItemStats:
        """Kind ``mme`` from one row per *question* (its image id, subtask and whether it was answered right). The
        image is the resampling unit (its two questions are paired by design); rows keep the images' first order.
        "Both correct" means every question of that image in that subtask is right (MME has two per image)."""
        ids, rows = mme_rows(image_ids, subtasks, [bool(c) for c in correct])
        return cls("mme", tuple(ids), np.array(rows, dtype=np.float64).reshape(len(ids), -1))


SeedRuns = Sequence[Mapping[str, ItemStats]]  # one cell: per seed, benchmark → ItemStats

# ------------------------------------------------------------------------------------------------- random draws


def item_weights(benchmark: str, n_items: int, replicates: int, seed: int) -> np.ndarray:
    """``W [replicates, n_items]`` float64: how often each item is drawn on each replicate (each row sums to
    ``n_items``, i.e. Multinomial(n, 1/n) — counted from n uniform draws, which is faster than ``multinomial`` and the
    same distribution). The stream depends only on (seed, benchmark), so adding a cell changes no draw."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, zlib.crc32(benchmark.encode()))))
    draws = rng.integers(0, n_items, size=(replicates, n_items))
    draws += np.arange(replicates)[:, None] * n_items
    return np.bincount(draws.ravel(), minlength=replicates * n_items).reshape(replicates, n_items).astype(np.float64)


def seed_weights(n_seeds: int, replicates: int, seed: int) -> np.ndarray:
    """``C [replicates, n_seeds]``: how often each seed is drawn (S draws with replacement). One seed: all ones."""
    if n_seeds == 1:
        return np.ones((replicates, 1))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, n_seeds)))
    return rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=replicates).astype(np.float64)


def metric_replicates(stats: ItemStats, metric: str, weights: np.ndarray) -> np.ndarray:
    """The metric on every resample: g(W @ X) → [R]. What ``bootstrap`` computes, exposed for checks."""
    g = STAT_KINDS[stats.kind].metric(metric, stats.stats.sum(axis=0))
    return g(weights @ stats.stats)


# ---------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Estimate:
    """A point estimate (no resampling) and its percentile interval over the finite replicates. ``point`` None
    means N/A; ``low``/``high`` are None when no replicate was finite."""

    point: float | None
    low: float | None = None
    high: float | None = None
    finite: int = 0  # replicates on which the statistic was finite

    def contains(self, x: float) -> bool:
        return self.low is not None and self.high is not None and self.low <= x <= self.high


_NA = Estimate(None)


@dataclass(frozen=True)
class CellStats:
    selector: str
    budget: str
    n_seeds: int
    arp: Estimate  # ARP (arp_v1), in percent
    relative: dict[str, Estimate]  # column key → relative performance (percent of the reference)
    values: dict[str, Estimate]  # column key → the column's value (mean of its sources, averaged over seeds)


@dataclass(frozen=True)
class PairStats:
    a: CellKey
    b: CellKey
    difference: Estimate  # ARP(a) − ARP(b), ARP points
    p_value: float | None  # two-sided, H0: no difference


@dataclass(frozen=True)
class BudgetStats:
    budget: str
    best: CellKey | None  # the highest point ARP (first in input order on a tie)
    tie_group: tuple[CellKey, ...]  # cells whose ARP difference to the best has a CI containing 0 (best included)
    ranks: dict[CellKey, int]  # rank of the point ARP (1 = best; equal ARPs share the better rank)
    rank_ranges: dict[CellKey, tuple[int, int]]  # (low, high) percentiles of the rank over finite replicates


@dataclass(frozen=True)
class BootstrapResult:
    cells: dict[CellKey, CellStats]
    pairs: dict[tuple[CellKey, CellKey], PairStats]  # (a, b) with a before b in the input order
    budgets: dict[str, BudgetStats]
    reference: dict[str, Estimate]  # column key → the reference's value
    replicates: int
    seed: int
    confidence: float
    arp_replicates: dict[CellKey, np.ndarray] = field(default_factory=dict, compare=False, repr=False)  # [R] each

    def pair(self, a: CellKey, b: CellKey) -> PairStats:
        """ARP(a) − ARP(b) in either input order."""
        if (a, b) in self.pairs:
            return self.pairs[(a, b)]
        p = self.pairs[(b, a)]
        d = p.difference
        flipped = Estimate(None if d.point is None else -d.point, None if d.high is None else -d.high,
                           None if d.low is None else -d.low, d.finite)
        return PairStats(a, b, flipped, p.p_value)

    def cells_frame(self) -> pd.DataFrame:
        """One row per cell: ARP and its CI, each column's relative performance and CI, rank range, tie flag."""
        rows = []
        for key, c in self.cells.items():
            bud = self.budgets.get(c.budget)
            row: dict[str, Any] = {"selector": c.selector, "budget": c.budget, "n_seeds": c.n_seeds,
                                   **_flat("arp", c.arp)}
            for col, est in c.relative.items():
                row.update(_flat(f"rel_{col}", est))
            lo_hi = bud.rank_ranges.get(key) if bud else None
            row.update(rank=bud.ranks.get(key) if bud else None, rank_low=lo_hi[0] if lo_hi else None,
                       rank_high=lo_hi[1] if lo_hi else None, tie_best=bool(bud and key in bud.tie_group))
            rows.append(row)
        return pd.DataFrame(rows)

    def pairs_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"selector_a": p.a[0], "budget_a": p.a[1], "selector_b": p.b[0], "budget_b": p.b[1],
                              **_flat("difference", p.difference), "p_value": p.p_value}
                             for p in self.pairs.values()])


def _flat(name: str, e: Estimate) -> dict[str, Any]:
    return {name: e.point, f"{name}_low": e.low, f"{name}_high": e.high, f"{name}_finite": e.finite}


@dataclass(frozen=True)
class PairedDifference:
    """``after − before`` for one cell on two nights (relative performance vs each night's reference)."""

    arp: Estimate  # ARP points
    arp_p_value: float | None
    relative: dict[str, Estimate]  # column key → difference of relative performance
    p_values: dict[str, float | None]
    before: Estimate  # ARP before
    after: Estimate  # ARP after
    replicates: int
    seed: int
    confidence: float

    @property
    def changed(self) -> bool:
        """The ARP difference's CI excludes 0. Columns are informational: testing each at the same level would
        raise a false alarm on some column most nights."""
        return self.arp.low is not None and not self.arp.contains(0.0)

    @property
    def regressed(self) -> bool:
        return self.changed and self.arp.high is not None and self.arp.high < 0

    @property
    def improved(self) -> bool:
        return self.changed and self.arp.low is not None and self.arp.low > 0


# ----------------------------------------------------------------------------------------------------- engine


@dataclass
class _Series:
    """One unit's column: per-seed point values and per-seed replicate values [R]."""

    points: list[float]
    reps: list[np.ndarray]


@dataclass
class _Unit:
    """A cell, or the reference, after resampling: its columns (None = N/A) and its seed draws."""

    columns: dict[str, _Series | None]
    seed_counts: np.ndarray  # [R, S]


@dataclass
class _Relative:
    """One unit relative to a reference: per column value/relative point and replicates, ARP point and replicates
    (None = N/A)."""

    values: dict[str, tuple[float, np.ndarray] | None]
    relative: dict[str, tuple[float, np.ndarray] | None]
    arp: tuple[float, np.ndarray] | None


def _needed(columns: Sequence[Column]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in columns:
        for s in c.sources:
            out.setdefault(s.benchmark, [])
            if s.metric not in out[s.benchmark]:
                out[s.benchmark].append(s.metric)
    return out


def _aligned(stats: ItemStats, canon: ItemStats, benchmark: str, who: str, canon_who: str) -> np.ndarray:
    """``stats`` rows in the canonical item order; a different item set is an error (the design is paired)."""
    if stats.kind != canon.kind:
        raise ValueError(f"benchmark {benchmark!r}: {who} has {stats.kind} statistics, {canon_who} {canon.kind}")
    if stats.ids == canon.ids:
        return stats.stats
    ours, theirs = set(stats.ids), set(canon.ids)
    if ours != theirs:
        raise ValueError(f"benchmark {benchmark!r}: {who} and {canon_who} were evaluated on different items "
                         f"({len(ours ^ theirs)} differ: {len(ours - theirs)} only in {who}, "
                         f"{len(theirs - ours)} only in {canon_who})")
    pos = {i: k for k, i in enumerate(stats.ids)}
    return stats.stats[[pos[i] for i in canon.ids]]


def _unique_columns(mats: Sequence[np.ndarray]) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
    """Identical statistic columns across cells (the ``1`` column, MME's question counts, identical cells) are
    summed once: half the work for mean/MME layouts, and identical inputs get bit-identical sums wherever the
    matrix product puts them. → (where each unique column lives (matrix, column), each matrix's column indices)."""
    where: list[tuple[int, int]] = []
    index: dict[int, list[int]] = {}
    maps = []
    for m, x in enumerate(mats):
        idx = np.empty(x.shape[1], dtype=np.intp)
        for j, fp in enumerate(_fingerprints(x).tolist()):
            bucket = index.setdefault(fp, [])
            # a fingerprint only shortlists: equality is checked, so a collision costs a comparison, never a result
            hit = next((u for u in bucket if np.array_equal(mats[where[u][0]][:, where[u][1]], x[:, j])), None)
            if hit is None:
                hit = len(where)
                where.append((m, j))
                bucket.append(hit)
            idx[j] = hit
        maps.append(idx)
    return where, maps


def _fingerprints(x: np.ndarray) -> np.ndarray:
    """One uint64 per column: Σ_i mix(bits(x_i))·c_i mod 2⁶⁴ with fixed random c — exact integer arithmetic, so
    equal columns always get equal fingerprints, all columns of a matrix in one vectorised pass. ``mix`` (MurmurHash3's
    fmix64 finaliser) spreads the high bits where floats like 0.0/1.0 differ; without it products mod 2⁶⁴ would keep
    those differences in the top bits and collide often."""
    h = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64).copy()
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    mult = np.random.PCG64(h.shape[0]).random_raw(h.shape[0]).astype(np.uint64)
    return (h * mult[:, None]).sum(axis=0, dtype=np.uint64)


_CHUNK = 512  # unique columns per matrix product: bounds the stacked copy at n × 512 floats


def _resampled_sums(weights: np.ndarray, mats: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per matrix: the full-data column sums [k] and the replicate sums W @ X [R, k], from one shared W."""
    where, maps = _unique_columns(mats)
    sums = np.empty((weights.shape[0], len(where)))
    totals = np.empty(len(where))
    for lo in range(0, len(where), _CHUNK):
        block = np.stack([mats[m][:, j] for m, j in where[lo:lo + _CHUNK]], axis=1)
        sums[:, lo:lo + block.shape[1]] = weights @ block
        totals[lo:lo + block.shape[1]] = block.sum(axis=0)
    return [totals[idx] for idx in maps], [sums[:, idx] for idx in maps]


def _metric_values(units: Mapping[Hashable, tuple[str, SeedRuns]], needed: Mapping[str, Sequence[str]],
                   replicates: int, seed: int) -> dict[tuple[Hashable, int, str, str], tuple[float, np.ndarray]]:
    """(unit, seed index, benchmark, metric) → (point, replicates [R]) for every metric the columns read. The
    first unit holding a benchmark fixes its item set and order (pass the reference first)."""
    work = []  # everything is aligned and every metric name checked before the first matrix product
    for bench, metrics in needed.items():
        holders = [(u, s, run[bench]) for u, (_, runs) in units.items() for s, run in enumerate(runs)
                   if bench in run]
        if not holders:
            continue
        canon_u, canon_s, canon = holders[0]
        canon_who = _who(units[canon_u][0], canon_s, len(units[canon_u][1]))
        mats = [_aligned(st, canon, bench, _who(units[u][0], s, len(units[u][1])), canon_who)
                for u, s, st in holders]
        kind = STAT_KINDS[canon.kind]
        for metric in metrics:
            kind.metric(metric, canon.stats.sum(axis=0))
        work.append((bench, metrics, holders, mats, kind))
    out: dict[tuple[Hashable, int, str, str], tuple[float, np.ndarray]] = {}
    for bench, metrics, holders, mats, kind in work:
        totals, sums = _resampled_sums(item_weights(bench, mats[0].shape[0], replicates, seed), mats)
        for (u, s, _), tot, sm in zip(holders, totals, sums):
            for metric in metrics:
                g = kind.metric(metric, tot)
                out[(u, s, bench, metric)] = (float(g(tot[None, :])[0]), g(sm))
    return out


def _who(label: str, seed_index: int, n_seeds: int) -> str:
    return label if n_seeds == 1 else f"{label} (seed #{seed_index})"


def _units(units: Mapping[Hashable, tuple[str, SeedRuns]], columns: Sequence[Column], replicates: int,
           seed: int) -> dict[Hashable, _Unit]:
    """Every unit's columns on the shared item resamples, with its seed draws."""
    vals = _metric_values(units, _needed(columns), replicates, seed)
    out = {}
    for u, (_, runs) in units.items():
        cols: dict[str, _Series | None] = {}
        for c in columns:
            per_seed = [[vals.get((u, s, src.benchmark, src.metric)) for src in c.sources] for s in range(len(runs))]
            if not runs or any(v is None for got in per_seed for v in got):
                cols[c.key] = None  # a seed lacks a source: N/A, never a partial mean
                continue
            points = [_mean([v[0] for v in got]) for got in per_seed]  # type: ignore[index]
            if not all(math.isfinite(p) for p in points):
                cols[c.key] = None  # undefined on the full data (e.g. precision with no "yes" answer)
                continue
            cols[c.key] = _Series(points, [_mean([v[1] for v in got]) for got in per_seed])  # type: ignore[index]
        out[u] = _Unit(cols, seed_weights(max(1, len(runs)), replicates, seed))
    return out


def _mean(xs: Sequence[Any]) -> Any:
    """Left-to-right sum / count: elementwise and in a fixed order, so equal inputs give bit-equal outputs."""
    acc = xs[0]
    for x in xs[1:]:
        acc = acc + x
    return acc / len(xs)


def _over_seeds(reps: Sequence[np.ndarray], counts: np.ndarray) -> np.ndarray:
    """Mean over the drawn seeds on each replicate; a seed not drawn contributes nothing (not even its NaN)."""
    acc = np.zeros(counts.shape[0])
    for s, r in enumerate(reps):
        acc = acc + np.where(counts[:, s] > 0, counts[:, s] * r, 0.0)
    return acc / counts.shape[1]


def _rel(value: Any, reference: Any, higher_is_better: bool) -> Any:
    """100 · value/reference (reference/value when lower is better); non-finite → NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = 100.0 * (np.divide(value, reference) if higher_is_better else np.divide(reference, value))
    return np.where(np.isfinite(r), r, np.nan)


def _relative(unit: _Unit, ref: _Unit, columns: Sequence[Column]) -> _Relative:
    values: dict[str, tuple[float, np.ndarray] | None] = {}
    relative: dict[str, tuple[float, np.ndarray] | None] = {}
    for c in columns:
        col, rcol = unit.columns[c.key], ref.columns[c.key]
        values[c.key] = None if col is None else (_mean(col.points), _over_seeds(col.reps, unit.seed_counts))
        if col is None or rcol is None:
            relative[c.key] = None
            continue
        ref_point, ref_reps = _mean(rcol.points), _over_seeds(rcol.reps, ref.seed_counts)
        # per seed, then averaged: equals the ratio of the seed-mean for higher-is-better columns and matches the
        # leaderboard's mean over seeds of per-seed relative performance for lower-is-better ones
        point = _mean([float(_rel(p, ref_point, c.higher_is_better)) for p in col.points])
        reps = _over_seeds([_rel(r, ref_reps, c.higher_is_better) for r in col.reps], unit.seed_counts)
        relative[c.key] = None if not math.isfinite(point) else (point, reps)
    got = list(relative.values())
    if not got or any(r is None for r in got):
        return _Relative(values, relative, None)
    return _Relative(values, relative, (_mean([r[0] for r in got]), _mean([r[1] for r in got])))  # type: ignore[index]


def _estimate(stat: tuple[float, np.ndarray] | None, confidence: float) -> Estimate:
    """Percentile interval (Efron & Tibshirani 1993, ch. 13) over the finite replicates, its ends the (R+1)·α/2-th
    and (R+1)·(1 − α/2)-th order statistics (Davison & Hinkley 1997, §5.2–5.3; numpy's "weibull" positions): numpy's
    default interpolation at α·(R − 1) is narrower than 1 − α by about 2/(R + 1), which shows at R = 300."""
    if stat is None:
        return _NA
    point, reps = stat
    finite = reps[np.isfinite(reps)]
    if finite.size == 0:
        return Estimate(point)
    alpha = 1.0 - confidence
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2], method="weibull")
    return Estimate(point, float(low), float(high), int(finite.size))


def _p_value(stat: tuple[float, np.ndarray] | None) -> float | None:
    """Two-sided bootstrap p-value for H0: difference = 0 — the smallest α at which the (1 − α) percentile
    interval excludes 0, with the +1 correction of a Monte Carlo p-value (Davison & Hinkley 1997, §4.4)."""
    if stat is None:
        return None
    d = stat[1][np.isfinite(stat[1])]
    if d.size == 0:
        return None
    below, above = int((d <= 0).sum()), int((d >= 0).sum())
    return min(1.0, 2.0 * (min(below, above) + 1) / (d.size + 1))


def _difference(a: tuple[float, np.ndarray] | None,
                b: tuple[float, np.ndarray] | None) -> tuple[float, np.ndarray] | None:
    return None if a is None or b is None else (a[0] - b[0], a[1] - b[1])


def _check(replicates: int, seed: int, confidence: float) -> None:
    if replicates < 1:
        raise ValueError(f"replicates must be ≥ 1, got {replicates}")
    if seed < 0:
        raise ValueError(f"seed must be ≥ 0, got {seed}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


# ----------------------------------------------------------------------------------------------- public API


def bootstrap(cells: Mapping[CellKey, SeedRuns], reference: SeedRuns | Mapping[str, ItemStats],
              columns: Sequence[Column], *,
              replicates: int = 1000, seed: int = 0, confidence: float = 0.95,
              compare: Literal["budget", "all"] = "budget", unranked: Collection[str] = ()) -> BootstrapResult:
    """Paired, hierarchical percentile bootstrap of every cell's ARP and per-column relative performance.

    ``cells``: (selector, budget) → per seed, benchmark → ``ItemStats``; ``reference``: the full-data reference
    likewise (a list over seeds, usually one, or a single benchmark → ``ItemStats`` mapping). Per replicate: one
    resample of each benchmark's items shared by every cell and the reference, a resample of each cell's seeds,
    every column recomputed (mean over its sources), relative to the reference's value on the same replicate, and
    ARP. ``compare``: which pairs get an ARP-difference CI and p-value — cells at the same budget (default) or
    every pair. Per budget: rank ranges and the tie group of the best, among the cells whose selector label is not in
    ``unranked`` (sanity references: they get CIs and pairs, but never a rank).
    """
    _check(replicates, seed, confidence)
    if compare not in ("budget", "all"):
        raise ValueError(f"compare must be 'budget' or 'all', got {compare!r}")
    labelled: dict[Hashable, tuple[str, SeedRuns]] = {"__reference__": ("the reference", _runs(reference))}
    labelled.update({("cell", k): (f"cell {k[0]} @ {k[1]}", runs) for k, runs in cells.items()})
    units = _units(labelled, columns, replicates, seed)
    ref = units["__reference__"]
    rel = {k: _relative(units[("cell", k)], ref, columns) for k in cells}
    out_cells = {k: CellStats(k[0], k[1], len(cells[k]), _estimate(r.arp, confidence),
                              {c: _estimate(v, confidence) for c, v in r.relative.items()},
                              {c: _estimate(v, confidence) for c, v in r.values.items()}) for k, r in rel.items()}
    keys = list(cells)
    pairs = {(a, b): PairStats(a, b, _estimate(d := _difference(rel[a].arp, rel[b].arp), confidence), _p_value(d))
             for i, a in enumerate(keys) for b in keys[i + 1:] if compare == "all" or a[1] == b[1]}
    budgets = {bud: _budget(bud, [k for k in keys if k[1] == bud and k[0] not in unranked], rel, confidence)
               for bud in dict.fromkeys(k[1] for k in keys)}
    ref_values = {c.key: _estimate(None if (col := ref.columns[c.key]) is None else
                                   (_mean(col.points), _over_seeds(col.reps, ref.seed_counts)), confidence)
                  for c in columns}
    arp_reps = {k: r.arp[1] for k, r in rel.items() if r.arp is not None}
    return BootstrapResult(out_cells, pairs, budgets, ref_values, replicates, seed, confidence, arp_reps)


def _budget(budget: str, keys: Sequence[CellKey], rel: Mapping[CellKey, _Relative], confidence: float) -> BudgetStats:
    """Rank ranges and the tie group among the cells of one budget that have an ARP."""
    have = [k for k in keys if rel[k].arp is not None]
    if not have:
        return BudgetStats(budget, None, (), {}, {})
    points = np.array([rel[k].arp[0] for k in have])  # type: ignore[index]
    reps = np.stack([rel[k].arp[1] for k in have])  # type: ignore[index]  # [C, R]
    best = have[int(np.argmax(points))]
    ranks = {k: 1 + int((points > p).sum()) for k, p in zip(have, points)}
    # rank on a replicate = 1 + cells strictly better there (NaN compares false: an unmeasured cell is skipped)
    rep_ranks = 1.0 + (reps[None, :, :] > reps[:, None, :]).sum(axis=1)
    alpha = 1.0 - confidence
    rank_ranges = {}
    for k, r, ok in zip(have, rep_ranks, np.isfinite(reps)):
        if ok.any():
            rank_ranges[k] = (int(np.quantile(r[ok], alpha / 2, method="lower")),
                              int(np.quantile(r[ok], 1 - alpha / 2, method="higher")))
    ties = tuple(k for k in have
                 if _estimate(_difference(rel[k].arp, rel[best].arp), confidence).contains(0.0))
    return BudgetStats(budget, best, ties, ranks, rank_ranges)


def paired_difference(before: SeedRuns | Mapping[str, ItemStats], after: SeedRuns | Mapping[str, ItemStats],
                      columns: Sequence[Column], reference_before: SeedRuns | Mapping[str, ItemStats],
                      reference_after: SeedRuns | Mapping[str, ItemStats] | None = None, *,
                      replicates: int = 1000, seed: int = 0, confidence: float = 0.95) -> PairedDifference:
    """The nightly's test: did one cell change between two nights? ``after − before`` in ARP and per column, each
    night relative to its own reference (``reference_after`` defaults to ``reference_before``, the usual case: the
    reference is cached). All four answer the same items, so one item resample per replicate is shared by all —
    the paired bootstrap on item outcomes — and a regression on a few percent of items is detectable with one seed.
    Each argument is one seed's benchmark → ``ItemStats`` mapping, or a list of them (seeds paired by position)."""
    _check(replicates, seed, confidence)
    ref_after = reference_before if reference_after is None else reference_after
    labelled: dict[Hashable, tuple[str, SeedRuns]] = {
        "reference_before": ("the reference (before)", _runs(reference_before)),
        "before": ("before", _runs(before)), "after": ("after", _runs(after)),
        "reference_after": ("the reference (after)", _runs(ref_after))}
    units = _units(labelled, columns, replicates, seed)
    b = _relative(units["before"], units["reference_before"], columns)
    a = _relative(units["after"], units["reference_after"], columns)
    diffs = {c.key: _difference(a.relative[c.key], b.relative[c.key]) for c in columns}
    d_arp = _difference(a.arp, b.arp)
    return PairedDifference(_estimate(d_arp, confidence), _p_value(d_arp),
                            {k: _estimate(d, confidence) for k, d in diffs.items()},
                            {k: _p_value(d) for k, d in diffs.items()},
                            _estimate(b.arp, confidence), _estimate(a.arp, confidence), replicates, seed, confidence)


def _runs(x: SeedRuns | Mapping[str, ItemStats]) -> SeedRuns:
    return [x] if isinstance(x, Mapping) else list(x)


__all__ = ["BootstrapResult", "BudgetStats", "CellKey", "CellStats", "Estimate", "ItemStats", "MME_BLOCK",
           "MME_METRICS", "MME_SUBTASKS", "POPE_METRICS", "PairStats", "PairedDifference", "STAT_KINDS", "SeedRuns",
           "StatKind", "bootstrap", "item_weights", "metric_replicates", "paired_difference", "register_stat_kind",
           "seed_weights"]
