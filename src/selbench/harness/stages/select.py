"""The cheap half: a budget and a seed → exactly ``budget`` pool indices (validated against the contract)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selbench.harness.contracts import SelectConfig
from selbench.harness.store import Job, Store
from selbench.leaderboard import REFERENCE
from selbench.pool.manifest import load_manifest
from selbench.selectors.base import Budget, load_artifacts
from selbench.selectors.registry import instantiate
from selbench.selectors.scoring import select, write_selection

SELECTION = "selection.txt"  # one uid per line; SELECTION + ".json" holds the indices


def run(job: Job, store: Store, out: Path) -> dict:
    c = SelectConfig.parse(job)
    pool = load_manifest(store.path(job.deps["pool"]) / "manifest.parquet")
    if c.selector == REFERENCE:
        indices, seconds = np.arange(Budget.parse(c.budget).resolve(len(pool))), 0.0
    else:
        selector = instantiate(c.selector, c.impl, c.config)
        artifacts = load_artifacts(store.path(job.deps["score"]) / "artifacts.npz")
        indices, seconds = select(selector, artifacts, c.budget, c.seed, len(pool))
    write_selection(out / SELECTION, pool, indices, {"budget": c.budget, "seed": c.seed})
    return {"parts": {"selection": seconds}, "n_selected": len(indices)}
