"""The expensive half of a selector: features / proxy training / scores, shared by every budget and seed."""

from __future__ import annotations

import shutil
from pathlib import Path

from selbench.harness.store import Job, Store
from selbench.pool.manifest import load_manifest
from selbench.selectors.base import ScoringContext, save_artifacts
from selbench.selectors.registry import instantiate


def run(job: Job, store: Store, out: Path) -> dict:
    c = job.config
    pool = load_manifest(store.path(job.deps["pool"]) / "manifest.parquet")
    selector = instantiate(c["selector"], c.get("impl"), c.get("config"))
    ctx = ScoringContext(work_dir=out / "work", target=Path(c["target"]) if c.get("target") else None,
                         proxy=Path(c["proxy"]) if c.get("proxy") else None, device=c.get("device"),
                         batch_size=c.get("batch_size", 32), seed=c.get("seed", 0))
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    artifacts = selector.score(pool, ctx)
    save_artifacts(artifacts, out / "artifacts.npz")
    # Checkpoints and shards are scratch: the artifacts are what downstream stages read.
    shutil.rmtree(ctx.work_dir, ignore_errors=True)
    return {"parts": dict(ctx.timings), "notes": ctx.notes}
