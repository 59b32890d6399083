"""Statistics behind the leaderboard: per-item sufficient statistics and the paired, hierarchical bootstrap.

The acceptance criteria of "Numbers a researcher can trust": (a) nominal coverage on simulated data, (b) exact zero
for identical cells, (c) corpus-level metrics equal to the direct formula on an explicit resample, (d) N/A
propagation, (e) misaligned items fail loudly, (f) determinism, (g) the nightly paired comparison."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from selbench.evaluators.metrics import pope_metrics
from selbench.evaluators.protocols import Column, Source
from selbench.leaderboard.statistics import (
    MME_COGNITION,
    MME_PERCEPTION,
    MME_SUBTASKS,
    STAT_KINDS,
    Estimate,
    ItemStats,
    StatKind,
    bootstrap,
    item_weights,
    metric_replicates,
    paired_difference,
    register_stat_kind,
    seed_weights,
)


def col(key: str, bench: str, metric: str = "exact_match", higher: bool = True) -> Column:
    return Column(key, key, (Source(bench, metric),), higher_is_better=higher)


def ids(n: int, prefix: str = "q") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def bernoulli(rng: np.random.Generator, n: int, p: float) -> ItemStats:
    return ItemStats.from_scores(ids(n), rng.random(n) < p)


# ------------------------------------------------------------------------------------------ (a) coverage


def test_ci_covers_the_true_relative_performance_at_the_nominal_rate() -> None:
    """200 simulated runs, each a cell and a reference on the same 500 items of two benchmarks (outcomes correlated
    item by item, as a subset model and the full-data model are): cell ~ Bernoulli(p), reference ~ Bernoulli(q), so
    the true relative performance is p/q and the true ARP their mean. The 95 % CIs cover them in ≥ 93 % of runs
    (2,000 such runs measured 95.2 % for ARP and 94.3 % / 94.9 % for the columns, 300 replicates each)."""
    truth = {"A": (0.60, 0.75), "B": (0.45, 0.50)}
    columns = [col("a", "A"), col("b", "B")]
    runs, n = 200, 500
    rng = np.random.default_rng(20240601)
    # all runs' outcomes at once: [runs, n] per benchmark; half the items share the cell's latent draw
    outcomes = {}
    for bench, (p, q) in truth.items():
        u, v, shared = rng.random((runs, n)), rng.random((runs, n)), rng.random((runs, n)) < 0.5
        outcomes[bench] = (u < p, np.where(shared, u, v) < q)
    true_arp = 100 * np.mean([p / q for p, q in truth.values()])
    hits: dict[str, int] = defaultdict(int)
    for run in range(runs):
        cell = {b: ItemStats.from_scores(ids(n), outcomes[b][0][run]) for b in truth}
        ref = {b: ItemStats.from_scores(ids(n), outcomes[b][1][run]) for b in truth}
        res = bootstrap({("sel", "10%"): [cell]}, [ref], columns, replicates=300, seed=run).cells[("sel", "10%")]
        hits["arp"] += res.arp.contains(true_arp)
        for c, bench in (("a", "A"), ("b", "B")):
            hits[c] += res.relative[c].contains(100 * truth[bench][0] / truth[bench][1])
    coverage = {k: v / runs for k, v in hits.items()}
    assert all(0.93 <= c <= 0.99 for c in coverage.values()), coverage


# ---------------------------------------------------------------------------- (b) identical cells → exact 0


def test_identical_cells_differ_by_exactly_zero() -> None:
    rng = np.random.default_rng(1)
    n = 300
    # fractional scores (VQA's min(#humans/3, 1)) as well as 0/1: the zero must not depend on rounding
    vqa = ItemStats.from_scores(ids(n), rng.choice([0.0, 1 / 3, 2 / 3, 1.0], n))
    gold = rng.random(n) < 0.5
    pope = ItemStats.from_pope(ids(n), rng.random(n) < 0.5, gold)
    cell = {"vqa": vqa, "pope": pope}
    ref = {"vqa": ItemStats.from_scores(ids(n), rng.random(n)), "pope": ItemStats.from_pope(ids(n), gold, gold)}
    cells = {("a", "10%"): [cell], ("b", "10%"): [dict(cell)],  # one seed each
             ("c", "20%"): [cell, ref], ("d", "20%"): [dict(cell), dict(ref)]}  # two seeds each, same order
    columns = [col("vqa", "vqa"), col("pope", "pope", "pope_f1_score")]
    res = bootstrap(cells, [ref], columns, replicates=500)
    for a, b in ((("a", "10%"), ("b", "10%")), (("c", "20%"), ("d", "20%"))):
        pair = res.pair(a, b)
        assert pair.difference == Estimate(0.0, 0.0, 0.0, 500) and pair.p_value == 1.0
        assert np.array_equal(res.arp_replicates[a], res.arp_replicates[b])
        assert set(res.budgets[a[1]].tie_group) == {a, b}


# ------------------------------------------------------------------ (c) corpus-level metrics on a resample


def test_pope_recomputed_on_a_resample_equals_the_evaluator_on_the_resampled_items() -> None:
    rng = np.random.default_rng(2)
    n = 120
    gold = np.where(rng.random(n) < 0.5, "yes", "no")
    pred = np.where(rng.random(n) < 0.8, gold, np.where(gold == "yes", "no", "yes"))
    stats = ItemStats.from_pope(ids(n), pred == "yes", gold == "yes")
    assert stats.value("pope_f1_score") == pytest.approx(pope_metrics(list(pred), list(gold))["f1"])
    weights = item_weights("pope", n, 25, seed=7)
    assert (weights.sum(axis=1) == n).all()
    for ours, theirs in (("pope_f1_score", "f1"), ("pope_accuracy", "accuracy"), ("pope_precision", "precision"),
                         ("pope_recall", "recall"), ("pope_yes_ratio", "yes_ratio"), ("f1", "f1")):
        got = metric_replicates(stats, ours, weights)
        for r in range(len(weights)):
            take = np.repeat(np.arange(n), weights[r].astype(int))  # the explicitly resampled item list
            assert got[r] == pytest.approx(pope_metrics(list(pred[take]), list(gold[take]))[theirs], abs=1e-12)


def mme_direct(questions: list[tuple[str, str, bool]]) -> dict[str, float]:
    """lmms-eval's ``mme_aggregate_results``: per subtask, per image acc (mean of its questions) + acc_plus (all
    right), × 100, averaged over images; summed over the perception and the cognition subtasks."""
    by_task: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for image, task, ok in questions:
        by_task[task][image].append(ok)
    score = {t: float(np.mean([100 * (np.mean(s) + all(s)) for s in imgs.values()])) for t, imgs in by_task.items()}
    return {"mme_perception_score": sum(score.get(t, 0.0) for t in MME_PERCEPTION),
            "mme_cognition_score": sum(score.get(t, 0.0) for t in MME_COGNITION)}


def test_mme_paired_score_on_a_resample_equals_the_direct_formula() -> None:
    rng = np.random.default_rng(3)
    questions = []  # (image, subtask, correct): two questions per image, 6 images per subtask
    for t in MME_SUBTASKS:
        for i in range(6):
            questions += [(f"{t}/{i}.png", t, bool(rng.random() < 0.7)) for _ in range(2)]
    stats = ItemStats.from_mme(*zip(*questions))
    assert stats.stats.shape == (6 * len(MME_SUBTASKS), 4 * len(MME_SUBTASKS))
    direct = mme_direct(questions)
    for metric in direct:
        assert stats.value(metric) == pytest.approx(direct[metric])
    assert stats.value("mme_percetion_score") == stats.value("mme_perception_score")  # lmms-eval's spelling

    weights = item_weights("mme", len(stats), 20, seed=1)
    got = {m: metric_replicates(stats, m, weights) for m in direct}
    by_image = defaultdict(list)
    for q in questions:
        by_image[q[0]].append(q)
    groups = {"mme_perception_score": MME_PERCEPTION, "mme_cognition_score": MME_COGNITION}
    for r in range(len(weights)):
        resampled = []  # each drawn copy of an image is its own image (lmms-eval groups by question id)
        for image, count in zip(stats.ids, weights[r].astype(int)):
            resampled += [(f"{im}#{c}", t, ok) for c in range(count) for im, t, ok in by_image[image]]
        want, drawn = mme_direct(resampled), {t for _, t, _ in resampled}
        for m, group in groups.items():
            if set(group) <= drawn:
                assert got[m][r] == pytest.approx(want[m]), (r, m)
            else:  # a subtask with images in the data but none drawn: undefined, not a lower score
                assert np.isnan(got[m][r]), (r, m)
    # the same, forced: drop every code_reasoning image from a replicate
    none_drawn = np.ones((1, len(stats)))
    none_drawn[0, [i for i, im in enumerate(stats.ids) if im.startswith("code_reasoning/")]] = 0
    assert np.isnan(metric_replicates(stats, "mme_cognition_score", none_drawn)[0])
    assert metric_replicates(stats, "mme_perception_score", none_drawn)[0] == pytest.approx(
        direct["mme_perception_score"])
    # a subtask absent from the data (a partial MME) does not count, as in lmms-eval
    partial = ItemStats.from_mme(*zip(*[q for q in questions if q[1] != "OCR"]))
    assert partial.value("mme_perception_score") == pytest.approx(
        mme_direct([q for q in questions if q[1] != "OCR"])["mme_perception_score"])


def test_bootstrap_uses_the_published_item_weights() -> None:
    """The interval ``bootstrap`` reports for a column's value is the percentile of ``metric_replicates`` under
    ``item_weights(benchmark, …, seed)``: what (c) checks is what the leaderboard gets."""
    rng = np.random.default_rng(4)
    n, reps = 150, 400
    gold = rng.random(n) < 0.5
    cell = ItemStats.from_pope(ids(n), rng.random(n) < 0.6, gold)
    ref = ItemStats.from_pope(ids(n), gold ^ (rng.random(n) < 0.1), gold)
    res = bootstrap({("s", "b"): [{"pope": cell}]}, [{"pope": ref}], [col("p", "pope", "pope_f1_score")],
                    replicates=reps, seed=9)
    w = item_weights("pope", n, reps, 9)
    vals = metric_replicates(cell, "pope_f1_score", w)
    assert res.cells[("s", "b")].values["p"].low == pytest.approx(np.quantile(vals, 0.025, method="weibull"), abs=1e-12)
    rel = 100 * vals / metric_replicates(ref, "pope_f1_score", w)
    est = res.cells[("s", "b")].relative["p"]
    assert (est.low, est.high) == pytest.approx(tuple(np.quantile(rel, [0.025, 0.975], method="weibull")), abs=1e-9)
    assert est.point == pytest.approx(100 * cell.value("f1") / ref.value("f1"))


# -------------------------------------------------------------------------------------- (d) N/A propagation


def test_na_propagates_and_undefined_replicates_are_counted() -> None:
    rng = np.random.default_rng(5)
    n = 200
    gold = rng.random(n) < 0.5
    ref = {"A": bernoulli(rng, n, 0.8), "P": ItemStats.from_pope(ids(n), gold, gold)}
    rare_yes = np.zeros(n, dtype=bool)
    rare_yes[np.flatnonzero(gold)[:2]] = True  # two "yes" answers: precision undefined when neither is drawn
    cells = {
        ("full_cell", "10%"): [{"A": bernoulli(rng, n, 0.7), "P": ItemStats.from_pope(ids(n), rare_yes, gold)}],
        ("no_pope", "10%"): [{"A": bernoulli(rng, n, 0.7)}],
        ("seed_lacks_pope", "10%"): [{"A": bernoulli(rng, n, 0.7), "P": ref["P"]}, {"A": bernoulli(rng, n, 0.7)}],
        ("never_yes", "10%"): [{"A": bernoulli(rng, n, 0.7), "P": ItemStats.from_pope(ids(n), ~gold & gold, gold)}],
        ("no_seeds", "10%"): [],
    }
    columns = [col("a", "A"), col("pp", "P", "pope_precision")]
    res = bootstrap(cells, [ref], columns, replicates=300)
    full = res.cells[("full_cell", "10%")]
    assert full.arp.point is not None and 0 < full.arp.finite < 300  # NaN replicates dropped, and counted
    assert full.relative["pp"].finite == full.arp.finite and full.relative["a"].finite == 300
    for sel in ("no_pope", "seed_lacks_pope", "never_yes", "no_seeds"):
        c = res.cells[(sel, "10%")]
        assert c.arp == Estimate(None) and c.relative["pp"] == Estimate(None), sel  # never a partial mean
    assert res.cells[("no_pope", "10%")].relative["a"].low is not None  # the column it has still gets its CI
    assert res.pair(("full_cell", "10%"), ("no_pope", "10%")).difference == Estimate(None)
    assert res.pair(("full_cell", "10%"), ("no_pope", "10%")).p_value is None
    budget = res.budgets["10%"]
    assert budget.best == ("full_cell", "10%") and list(budget.ranks) == [("full_cell", "10%")]
    # a reference without a benchmark: no relative performance for anyone on its columns
    res = bootstrap({("x", "10%"): [{"A": ref["A"], "P": ref["P"]}]}, [{"A": ref["A"]}], columns, replicates=50)
    assert res.cells[("x", "10%")].arp == Estimate(None) and res.reference["pp"] == Estimate(None)
    assert res.cells[("x", "10%")].values["pp"].point == pytest.approx(1.0)


# ----------------------------------------------------------------------------------- (e) misaligned items


def test_misaligned_items_raise_a_clear_error() -> None:
    rng = np.random.default_rng(6)
    ref = {"emb_vqa": bernoulli(rng, 100, 0.8)}
    other = ItemStats.from_scores(ids(97) + ["x1", "x2", "x3"], rng.random(100) < 0.5)
    with pytest.raises(ValueError, match=r"emb_vqa.*cell sel @ 10%.*6 differ: 3 only in cell sel @ 10%"):
        bootstrap({("sel", "10%"): [{"emb_vqa": other}]}, [ref], [col("v", "emb_vqa")], replicates=10)
    with pytest.raises(ValueError, match="emb_vqa.*different items"):
        bootstrap({("sel", "10%"): [{"emb_vqa": bernoulli(rng, 90, 0.5)}]}, [ref], [col("v", "emb_vqa")])
    with pytest.raises(ValueError, match="emb_vqa.*pope statistics"):
        pope = ItemStats.from_pope(ids(100), np.ones(100, bool), np.ones(100, bool))
        bootstrap({("sel", "10%"): [{"emb_vqa": pope}]}, [ref], [col("v", "emb_vqa")])
    with pytest.raises(ValueError, match="ids repeat: q1"):
        ItemStats.from_scores(["q0", "q1", "q1"], [1, 0, 1])
    with pytest.raises(ValueError, match="do not determine metric 'bleu'"):
        bootstrap({}, [{"p": ItemStats.from_pope(ids(3), [1, 0, 1], [1, 1, 0])}], [col("p", "p", "bleu")])


def test_items_are_aligned_by_id_not_position() -> None:
    rng = np.random.default_rng(7)
    ref, cell = bernoulli(rng, 200, 0.8), bernoulli(rng, 200, 0.6)
    perm = rng.permutation(200)
    shuffled = ItemStats("mean", tuple(np.array(cell.ids)[perm]), cell.stats[perm])
    a = bootstrap({("s", "b"): [{"v": cell}]}, [{"v": ref}], [col("v", "v")], replicates=200)
    b = bootstrap({("s", "b"): [{"v": shuffled}]}, [{"v": ref}], [col("v", "v")], replicates=200)
    assert a.cells == b.cells


# ------------------------------------------------------------------------------------------ (f) determinism


def demo_matrix(seed: int = 8) -> tuple[dict, list, list[Column]]:
    rng = np.random.default_rng(seed)
    n = 150
    gold = rng.random(n) < 0.5
    columns = [col("vqa", "vqa"), col("mc", "mc"), col("pope", "pope", "pope_f1_score")]

    def run(p: float) -> dict[str, ItemStats]:
        pred = np.where(rng.random(n) < p, gold, ~gold)
        return {"vqa": bernoulli(rng, n, p), "mc": bernoulli(rng, n, p - 0.1),
                "pope": ItemStats.from_pope(ids(n), pred, gold)}

    cells = {(sel, bud): [run(p + 0.02 * s) for s in range(1 + i % 3)]
             for i, (sel, p) in enumerate([("random", 0.6), ("length", 0.62), ("prism", 0.7)])
             for bud in ("10%", "20%")}
    return cells, [run(0.8)], columns


def test_same_seed_gives_bit_identical_results() -> None:
    cells, ref, columns = demo_matrix()
    a = bootstrap(cells, ref, columns, replicates=300, seed=11, compare="all")
    b = bootstrap(cells, ref, columns, replicates=300, seed=11, compare="all")
    assert a == b  # every estimate, pair, rank range and tie group
    pd.testing.assert_frame_equal(a.cells_frame(), b.cells_frame(), check_exact=True)
    pd.testing.assert_frame_equal(a.pairs_frame(), b.pairs_frame(), check_exact=True)
    assert all(np.array_equal(a.arp_replicates[k], b.arp_replicates[k]) for k in cells)
    assert (a.replicates, a.seed, a.confidence) == (300, 11, 0.95)
    assert len(a.pairs) == 15 and len(bootstrap(cells, ref, columns, replicates=10).pairs) == 6  # all / per budget
    # streams are keyed by the seed and the benchmark, not the call order: a cell's numbers do not depend on the
    # other cells; another seed changes them
    alone = bootstrap({("prism", "20%"): cells[("prism", "20%")]}, ref, columns, replicates=300, seed=11)
    assert alone.cells[("prism", "20%")] == a.cells[("prism", "20%")]
    other = bootstrap(cells, ref, columns, replicates=300, seed=12)
    assert other.cells[("prism", "20%")].arp != a.cells[("prism", "20%")].arp


# ---------------------------------------------------------------------- seeds, ranks, tie groups, frames


def test_seeds_are_resampled_hierarchically() -> None:
    rng = np.random.default_rng(9)
    n = 400
    ref = {"v": bernoulli(rng, n, 0.8)}
    one = bernoulli(rng, n, 0.6)
    seeds = [bernoulli(rng, n, p) for p in (0.45, 0.6, 0.75)]  # strong seed noise
    res = bootstrap({("one", "b"): [{"v": one}], ("same", "b"): [{"v": one}] * 3,
                     ("noisy", "b"): [{"v": s} for s in seeds]}, [ref], [col("v", "v")], replicates=500)
    width = {k[0]: c.arp.high - c.arp.low for k, c in res.cells.items()}  # type: ignore[operator]
    assert width["same"] == pytest.approx(width["one"])  # identical seeds add no spread
    assert width["noisy"] > 2 * width["one"]  # seed noise is in the interval, not only item noise
    assert res.cells[("noisy", "b")].values["v"].point == pytest.approx(np.mean([s.value("m") for s in seeds]))
    draws = seed_weights(3, 500, 0)
    assert (draws.sum(axis=1) == 3).all() and (draws == 0).any()


def test_tie_groups_and_rank_ranges() -> None:
    rng = np.random.default_rng(10)
    n = 1000
    ref = {"v": bernoulli(rng, n, 0.8)}
    strong = bernoulli(rng, n, 0.7).stats[:, 0]
    near = strong.copy()
    near[np.flatnonzero(strong)[:2]] = 0  # 2 items worse: not separable from the best
    cells = {("strong", "5%"): [{"v": ItemStats.from_scores(ids(n), strong)}],
             ("near", "5%"): [{"v": ItemStats.from_scores(ids(n), near)}],
             ("weak", "5%"): [{"v": bernoulli(rng, n, 0.5)}],
             ("other_budget", "10%"): [{"v": bernoulli(rng, n, 0.9)}]}
    res = bootstrap(cells, [ref], [col("v", "v")], replicates=500)
    b = res.budgets["5%"]
    assert b.best == ("strong", "5%") and b.tie_group == (("strong", "5%"), ("near", "5%"))
    assert b.ranks == {("strong", "5%"): 1, ("near", "5%"): 2, ("weak", "5%"): 3}
    assert b.rank_ranges[("weak", "5%")] == (3, 3) and b.rank_ranges[("strong", "5%")] == (1, 1)
    assert res.budgets["10%"].tie_group == (("other_budget", "10%"),)
    assert (("strong", "5%"), ("other_budget", "10%")) not in res.pairs
    weak = res.pair(("weak", "5%"), ("strong", "5%"))
    assert weak.difference.high < 0 and weak.p_value < 0.01  # type: ignore[operator]
    flipped = res.pair(("strong", "5%"), ("weak", "5%")).difference
    assert (flipped.low, flipped.high) == (-weak.difference.high, -weak.difference.low)  # type: ignore[operator]
    frame = res.cells_frame().set_index("selector")
    assert frame.loc["near", "tie_best"] and not frame.loc["weak", "tie_best"]
    assert frame.loc["weak", ["rank", "rank_low", "rank_high"]].tolist() == [3, 3, 3]
    assert {"arp", "arp_low", "arp_high", "arp_finite", "rel_v", "rel_v_low"} <= set(frame.columns)


def test_lower_is_better_columns_invert_the_ratio() -> None:
    cell = ItemStats.from_scores(ids(4), [2.0, 2.0, 2.0, 2.0])  # e.g. an error rate of 2
    ref = ItemStats.from_scores(ids(4), [1.0, 1.0, 1.0, 1.0])
    res = bootstrap({("s", "b"): [{"e": cell}]}, [{"e": ref}], [col("e", "e", "err", higher=False)], replicates=20)
    assert res.cells[("s", "b")].relative["e"] == Estimate(50.0, 50.0, 50.0, 20)


def test_stat_kinds_are_a_registry() -> None:
    assert {"mean", "pope", "mme"} <= set(STAT_KINDS)
    with pytest.raises(ValueError, match="already registered"):
        register_stat_kind(STAT_KINDS["mean"])
    with pytest.raises(ValueError, match="must be"):
        ItemStats("pope", ("a",), np.zeros((1, 2)))
    kind = StatKind("sum_ratio_test", 2, "[x, y]", lambda name, totals: lambda s: s[:, 0] / s[:, 1])
    register_stat_kind(kind)
    try:
        assert ItemStats("sum_ratio_test", ("a", "b"), [[1, 2], [3, 2]]).value("anything") == 1.0
    finally:
        del STAT_KINDS["sum_ratio_test"]


# ------------------------------------------------------------------------------- (g) nightly comparison


def nightly_night(rng: np.random.Generator, n: int = 1000) -> dict[str, ItemStats]:
    return {f"b{i}": bernoulli(rng, n, 0.65) for i in range(5)}


def test_nightly_detects_an_injected_regression_with_one_seed() -> None:
    """5 % of one benchmark's 1,000 items flipped from right to wrong, one seed: ARP drops ~1.5 points, and the
    paired comparison calls it a regression; the four untouched columns differ by exactly 0."""
    rng = np.random.default_rng(12)
    columns = [col(f"b{i}", f"b{i}") for i in range(5)]
    ref = {b: bernoulli(rng, 1000, 0.75) for b in (c.key for c in columns)}
    before = nightly_night(rng)
    scores = before["b2"].stats[:, 0].copy()
    scores[rng.choice(np.flatnonzero(scores), 50, replace=False)] = 0.0
    after = {**before, "b2": ItemStats.from_scores(before["b2"].ids, scores)}
    diff = paired_difference(before, after, columns, ref, replicates=1000, seed=0)
    assert diff.regressed and diff.changed and not diff.improved
    assert diff.arp.point == pytest.approx(-100 * 50 / ref["b2"].stats[:, 0].sum() / 5)
    assert diff.arp.high < 0 and diff.arp_p_value < 0.01  # type: ignore[operator]
    assert diff.relative["b2"].high < 0 and diff.p_values["b2"] < 0.01  # type: ignore[operator]
    for b in ("b0", "b1", "b3", "b4"):
        assert diff.relative[b] == Estimate(0.0, 0.0, 0.0, 1000) and diff.p_values[b] == 1.0
    # the same change seen as an improvement the other way round
    assert paired_difference(after, before, columns, ref, replicates=1000).improved


def test_nightly_reports_no_change_for_an_identical_rerun() -> None:
    rng = np.random.default_rng(13)
    columns = [col(f"b{i}", f"b{i}") for i in range(5)]
    ref = nightly_night(rng)
    night = nightly_night(rng)
    rerun = {b: ItemStats(s.kind, s.ids, s.stats.copy()) for b, s in night.items()}  # equal content, new objects
    diff = paired_difference(night, rerun, columns, ref, dict(ref), replicates=1000)
    assert not diff.changed and not diff.regressed and not diff.improved
    assert diff.arp == Estimate(0.0, 0.0, 0.0, 1000) and diff.arp_p_value == 1.0
    assert diff.before == diff.after
    # several seeds a night, paired by position
    diff = paired_difference([night, ref], [rerun, ref], columns, ref, replicates=200)
    assert diff.arp == Estimate(0.0, 0.0, 0.0, 200)


def test_bad_arguments_fail_loudly() -> None:
    ref = {"v": ItemStats.from_scores(ids(3), [1, 0, 1])}
    for kwargs, message in (({"replicates": 0}, "replicates"), ({"seed": -1}, "seed"),
                            ({"confidence": 1.0}, "confidence"), ({"compare": "every"}, "compare")):
        with pytest.raises(ValueError, match=message):
            bootstrap({}, ref, [col("v", "v")], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown MME subtasks ocr"):
        ItemStats.from_mme(["a"], ["ocr"], [True])
