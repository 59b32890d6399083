"""The expensive half of a selector: features / proxy training / scores, shared by every budget and seed."""

from __future__ import annotations

from pathlib import Path

from selbench.harness.contracts import ScoreConfig
from selbench.harness.store import Job, Store
from selbench.pool.manifest import load_manifest
from selbench.selectors.base import ScoringContext
from selbench.selectors.registry import instantiate
from selbench.selectors.scoring import score_into


def run(job: Job, store: Store, out: Path) -> dict:
    c = ScoreConfig.parse(job)
    pool = load_manifest(store.path(job.deps["pool"]) / "manifest.parquet")
    selector = instantiate(c.selector, c.impl, c.config)
    ctx = ScoringContext(work_dir=out / "work", target=c.model_path("target"), proxy=c.model_path("proxy"),
                         device=c.device, batch_size=c.batch_size)
    score_into(selector, pool, ctx, out / "artifacts.npz")
    return {"parts": dict(ctx.timings), "notes": ctx.notes}
