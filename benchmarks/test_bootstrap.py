"""The leaderboard's paired bootstrap (``selbench.leaderboard.statistics.bootstrap``), 1,000 replicates, on CPU.

    .venv/bin/python -m pytest benchmarks/test_bootstrap.py -q --benchmark-only \
        --benchmark-columns=min,median,mean,rounds -p no:cacheprovider

- demo: 7 selectors × 3 budgets × 1–3 seeds, ``embedded_v1`` (5 columns, POPE as F1), 200 items — target ≤ 5 s;
- paper: 7 selectors × 4 budgets × 3 seeds, ``coincide_v1`` (11 columns over 13 benchmarks: POPE = mean F1 of
  three splits, MME-P from per-image paired statistics), 5,000 items (images for MME) each — target ≤ 60 s on
  2 cores, run once.
The inputs are built outside the timed call."""

from __future__ import annotations

import numpy as np

from selbench.evaluators.protocols import Column, get_protocol
from selbench.leaderboard.statistics import MME_SUBTASKS, ItemStats, bootstrap

SELECTORS = ("random", "length", "perplexity", "coincide", "prism", "xmas", "scalselect")


def _run(rng: np.random.Generator, columns: list[Column], n: int, skill: float) -> dict[str, ItemStats]:
    """One evaluated checkpoint: every benchmark the columns read, answered right with probability ≈ ``skill``."""
    ids = [f"i{k}" for k in range(n)]
    out: dict[str, ItemStats] = {}
    for bench in dict.fromkeys(s.benchmark for c in columns for s in c.sources):
        if bench.startswith("pope") or bench == "emb_pope":
            gold = np.arange(n) % 2 == 0  # POPE is balanced
            out[bench] = ItemStats.from_pope(ids, np.where(rng.random(n) < skill, gold, ~gold), gold)
        elif bench == "mme":
            images = [f"img{k}" for k in range(n) for _ in range(2)]  # two questions per image
            tasks = [MME_SUBTASKS[k % len(MME_SUBTASKS)] for k in range(n) for _ in range(2)]
            out[bench] = ItemStats.from_mme(images, tasks, rng.random(2 * n) < skill)
        else:
            out[bench] = ItemStats.from_scores(ids, rng.random(n) < skill)
    return out


def _matrix(protocol: str, budgets: tuple[str, ...], seeds: tuple[int, ...], n: int):
    rng = np.random.default_rng(0)
    columns = list(get_protocol(protocol).columns)
    cells = {(sel, bud): [_run(rng, columns, n, 0.55 + 0.02 * i + 0.03 * b)
                          for _ in range(seeds[(i + b) % len(seeds)])]
             for i, sel in enumerate(SELECTORS) for b, bud in enumerate(budgets)}
    return cells, [_run(rng, columns, n, 0.75)], columns


def test_bootstrap_demo(benchmark):
    cells, ref, columns = _matrix("embedded_v1", ("10%", "20%", "30%"), (1, 2, 3), 200)
    res = benchmark.pedantic(bootstrap, args=(cells, ref, columns), kwargs={"replicates": 1000},
                             rounds=3, iterations=1)
    assert len(res.cells) == 21 and all(c.arp.finite == 1000 for c in res.cells.values())


def test_bootstrap_paper(benchmark):
    cells, ref, columns = _matrix("coincide_v1", ("5%", "10%", "15%", "20%"), (3,), 5000)
    assert len(columns) == 11
    res = benchmark.pedantic(bootstrap, args=(cells, ref, columns), kwargs={"replicates": 1000},
                             rounds=1, iterations=1)
    assert len(res.cells) == 28 and all(c.arp.point is not None for c in res.cells.values())
