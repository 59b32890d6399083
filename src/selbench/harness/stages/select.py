"""The cheap half: a budget and a seed → exactly ``budget`` pool indices (validated against the contract).

The selector's own process checks its selection (``selectors.scoring.select``), but that process runs the selector's
code, which could write anything into its output folder. ``checked_selection`` is the harness's check, made outside
it: by the fine-tune stage before training and by the runner when it collects results.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from selbench.harness.contracts import SelectConfig
from selbench.harness.store import Job, Store
from selbench.leaderboard import REFERENCE
from selbench.pool import sanity
from selbench.pool.manifest import Manifest, load_manifest
from selbench.selectors.base import Budget, SelectionError, load_artifacts
from selbench.selectors.registry import instantiate
from selbench.selectors.scoring import select, write_selection

SELECTION = "selection.txt"  # one uid per line; SELECTION + ".json" holds the indices


def run(job: Job, store: Store, out: Path) -> dict:
    c = SelectConfig.parse(job)
    pool = load_manifest(store.path(job.deps["pool"]) / "manifest.parquet")
    if c.selector == REFERENCE:
        indices, seconds = np.arange(Budget.parse(c.budget).resolve(len(pool))), 0.0
    elif c.truth is not None:  # a sanity reference: chosen with the world's ground truth, not by a selector
        truth = sanity.load_truth(Path(c.truth), pool)
        indices, seconds = sanity.subset(c.selector, truth, Budget.parse(c.budget).resolve(len(pool)), c.seed), 0.0
    else:
        selector = instantiate(c.selector, c.impl, c.config)
        artifacts = load_artifacts(store.path(job.deps["score"]) / "artifacts.npz")
        indices, seconds = select(selector, artifacts, c.budget, c.seed, len(pool))
    write_selection(out / SELECTION, pool, indices, {"budget": c.budget, "seed": c.seed})
    return {"parts": {"selection": seconds}, "n_selected": len(indices)}


def checked_selection(store: Store, job: Job, pool: Manifest | None = None) -> list[int]:
    """The indices a stored select job chose, after the harness's own check: exactly the budget the job's config
    asks of this pool (``Budget.parse(budget).resolve(n)``), integers, unique, all pool rows (the manifest's
    ``index``), and the uid list (``selection.txt``) equal to those rows' uids in index order. Raises
    SelectionError naming the job and what is wrong."""
    c = SelectConfig.parse(job)
    pool = pool if pool is not None else load_manifest(store.path(job.deps["pool"]) / "manifest.parquet")
    folder, who = store.path(job.id), f"selection of {job.id}"
    try:
        side = json.loads((folder / f"{SELECTION}.json").read_text())
        lines = (folder / SELECTION).read_text().splitlines()
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested beyond the parser
        raise SelectionError(f"{who} rejected: unreadable ({type(e).__name__}: {str(e)[:200]})") from None
    indices = side.get("indices") if isinstance(side, dict) else None
    if not isinstance(indices, list) or not all(type(i) is int for i in indices):
        raise SelectionError(f"{who} rejected: {SELECTION}.json has no list of integer 'indices'")
    n = len(pool)
    k = Budget.parse(c.budget).resolve(n)
    if len(indices) != k:
        raise SelectionError(f"{who} rejected: {len(indices)} indices, but the budget {c.budget!r} of this "
                             f"{n}-sample pool is exactly {k}")
    repeated = [(i, m) for i, m in Counter(indices).items() if m > 1]
    if repeated:
        i, m = repeated[0]
        raise SelectionError(f"{who} rejected: index {i} appears {m} times ({len(repeated)} repeated indices)")
    uid_of = dict(zip(pool.frame["index"].tolist(), pool.frame["uid"].tolist()))
    outside = [i for i in indices if i not in uid_of]
    if outside:
        raise SelectionError(f"{who} rejected: index {outside[0]} is not in the pool (indices 0..{n - 1}; "
                             f"{len(outside)} outside)")
    expected = [uid_of[i] for i in sorted(indices)]
    if lines != expected:
        where = next((j for j, (a, b) in enumerate(zip(lines, expected)) if a != b), min(len(lines), len(expected)))
        got = repr(lines[where]) if where < len(lines) else "nothing"
        want = repr(expected[where]) if where < len(expected) else "nothing"
        raise SelectionError(f"{who} rejected: {SELECTION} does not list the selected rows' uids "
                             f"(line {where + 1}: {got}, the indices give {want})")
    if side.get("pool_hash") not in (None, pool.content_hash):
        raise SelectionError(f"{who} rejected: made for another pool (pool hash {side.get('pool_hash')})")
    return indices
