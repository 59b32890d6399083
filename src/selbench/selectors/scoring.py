"""Running a selector outside the harness: score with a content-keyed cache, select, write the outputs
(``selbench select``). The harness's score/select stages call the same two functions."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from selbench.pool.manifest import Manifest
from selbench.selectors.base import (
    Artifacts,
    Budget,
    ScoringContext,
    SelectionError,
    Selector,
    check_selection,
    load_artifacts,
    save_artifacts,
)


def score_key(selector: Selector, pool: Manifest, models: dict[str, str | None]) -> str:
    blob = json.dumps({"selector": selector.name, "config": selector.config.model_dump(mode="json"),
                       "pool": pool.content_hash, "models": models}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def from_features(selector: Selector, features: np.ndarray, pool: Manifest) -> Artifacts:
    """Score from user-supplied features (one row per pool sample; NaN rows = no feature)."""
    fn = getattr(selector, "from_features", None)
    if fn is None:
        raise SelectionError(f"selector {selector.name!r} does not take precomputed features")
    if features.ndim != 2 or len(features) != len(pool):
        raise SelectionError(f"features: expected shape ({len(pool)}, d) for this pool, got {features.shape}")
    return fn(features, pool)


def _models(ctx: ScoringContext) -> dict[str, str | None]:
    return {w: (str(getattr(ctx, w)) if getattr(ctx, w) else None) for w in ("target", "proxy")}


def score_into(selector: Selector, pool: Manifest, ctx: ScoringContext, path: Path, *,
               cleanup: bool = True) -> tuple[Artifacts, dict]:
    """Score in ``ctx.work_dir`` (scratch: shards, proxy checkpoints), save the artifacts at ``path`` with a JSON
    sidecar, then drop the scratch (``cleanup=False``: the caller does, once the other ranks of a multi-process job
    have finished with it). The one scoring path of ``selbench select`` and the harness's score stage."""
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    artifacts = selector.score(pool, ctx)
    meta: dict[str, Any] = {"selector": selector.name, "config": selector.config.model_dump(mode="json"),
                            "pool_hash": pool.content_hash, "models": _models(ctx),
                            "timings": {**ctx.timings, "total": time.perf_counter() - t0}, "notes": ctx.notes}
    save_artifacts(artifacts, path, meta)
    if cleanup:
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
    return artifacts, meta


def score_cached(selector: Selector, pool: Manifest, ctx: ScoringContext, cache: Path) -> tuple[Artifacts, dict]:
    key = score_key(selector, pool, _models(ctx))
    path = cache / f"{selector.name}-{key}.npz"
    if path.exists():
        meta = json.loads(path.with_suffix(".json").read_text())
        return load_artifacts(path), {**meta, "cached": True}
    ctx.work_dir = cache / f"{selector.name}-{key}.work"
    artifacts, meta = score_into(selector, pool, ctx, path)
    return artifacts, {**meta, "cached": False}


def select(selector: Selector, artifacts: Artifacts, budget: str | float | int | Budget, seed: int,
           pool_n: int) -> tuple[np.ndarray, float]:
    """Resolve the budget, select, and enforce the contract (exact count, unique, in range) for any selector,
    plugins and submissions included."""
    k = Budget.parse(budget).resolve(pool_n)
    t0 = time.perf_counter()
    idx = check_selection(selector.select(artifacts, k, seed), k, pool_n, selector.name)
    return idx, time.perf_counter() - t0


def write_selection(out: Path, pool: Manifest, indices: np.ndarray, sidecar: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    uids = pool.frame["uid"].to_numpy()[np.sort(indices)]
    out.write_text("".join(f"{u}\n" for u in uids))
    side = {**sidecar, "n_selected": int(len(indices)), "pool_hash": pool.content_hash,
            "indices": sorted(int(i) for i in indices)}
    out.with_name(out.name + ".json").write_text(json.dumps(side, indent=1, default=str))
