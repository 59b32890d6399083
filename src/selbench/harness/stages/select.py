"""The cheap half: a budget and a seed → exactly ``budget`` pool indices (validated against the contract)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from selbench.harness.store import Job, Store
from selbench.pool.manifest import load_manifest
from selbench.selectors.base import Budget, check_selection, load_artifacts
from selbench.selectors.registry import instantiate


def run(job: Job, store: Store, out: Path) -> dict:
    c = job.config
    pool = load_manifest(store.path(job.deps["pool"]) / "manifest.parquet")
    k = Budget.parse(c["budget"]).resolve(len(pool))
    t0 = time.perf_counter()
    if c["selector"] == "full":
        indices = list(range(len(pool)))
    else:
        selector = instantiate(c["selector"], c.get("impl"), c.get("config"))
        artifacts = load_artifacts(store.path(job.deps["score"]) / "artifacts.npz")
        indices = check_selection(selector.select(artifacts, k, c["seed"]), k, len(pool), c["selector"]).tolist()
    seconds = time.perf_counter() - t0
    uids = pool.frame["uid"].to_numpy()
    (out / "selection.json").write_text(json.dumps({"indices": sorted(indices), "budget": k}))
    (out / "selection.txt").write_text("".join(f"{uids[i]}\n" for i in sorted(indices)))
    return {"parts": {"selection": seconds}, "n_selected": len(indices)}
