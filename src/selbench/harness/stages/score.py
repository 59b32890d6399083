"""The expensive half of a selector: features / proxy training / scores, shared by every budget and seed.

With ``workers`` > 1 (ScoreConfig) a selector that says it can (``multi_process``) runs in that many processes: this
one is rank 0 and writes the outputs; ranks 1.. are subprocesses (``python -m selbench.harness.stages.score ARGS
RANK``) that only help with feature extraction. Each rank extracts every workers-th shard (FeatureEngine.run) and
reads the others' from files — the same shards and batches as one process, so the outputs are bit for bit the
one-process outputs. On GPUs rank r uses cuda:r of the devices the job was given; on CPU every rank uses the CPU with
rank 0's thread count, so the ranks share the cores (the same numbers, no speed-up: the CPU path is for tests).
Under the Ray executor the ranks are Ray tasks instead, one per bundle of the placement group the executor reserved
for the job (``RayRanks``): on any node of the cluster, each with its own GPU, exchanging shards through the store's
shared filesystem.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from selbench.harness.contracts import ScoreConfig
from selbench.harness.store import Job, Store
from selbench.models.ranks import RAY_NODE_ENV, RankProcesses, RayRanks, ray_ranks
from selbench.pool.manifest import load_manifest
from selbench.selectors.base import ScoringContext
from selbench.selectors.registry import instantiate
from selbench.selectors.scoring import score_into

SHARD_SIZE = 4096  # examples per extraction shard: the unit ranks share out, and a resumed extraction reuses where
# its work folder survives (`selbench select`'s cache; a harness job's staging folder is reclaimed on a rerun)


def run(job: Job, store: Store, out: Path) -> dict:
    return score(ScoreConfig.parse(job), store.path(job.deps["pool"]) / "manifest.parquet", out)


def score(c: ScoreConfig, manifest: Path, out: Path, *, shard_size: int = SHARD_SIZE) -> dict:
    """Score ``c``'s selector on the pool at ``manifest`` into ``out / "artifacts.npz"``; returns meta."""
    pool = load_manifest(manifest)
    selector = instantiate(c.selector, c.impl, c.config)
    workers = c.workers if getattr(selector, "multi_process", False) else 1
    on_ray = ray_ranks() if workers > 1 else None  # the placement group the Ray executor reserved, if any
    ctx = _context(c, out / "work", 0, workers, shard_size, own_device=on_ray is not None)
    if workers < c.workers:
        ctx.notes.append(f"{c.workers} workers asked for; selector {c.selector!r} does not split its work over "
                         "processes, so it ran in one")
    if workers == 1:
        score_into(selector, pool, ctx, out / "artifacts.npz")
    else:
        import torch

        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        args = ctx.work_dir / "ranks.json"
        args.write_text(json.dumps({"config": c.model_dump(mode="json"), "manifest": str(manifest),
                                    "work_dir": str(ctx.work_dir), "shard_size": shard_size,
                                    "threads": torch.get_num_threads(), "own_device": on_ray is not None}))
        argv = [sys.executable, "-m", "selbench.harness.stages.score", str(args)]
        ranks: RankProcesses | RayRanks = (RankProcesses(argv, workers, ctx.work_dir) if on_ray is None
                                           else RayRanks(argv, workers, ctx.work_dir, on_ray))
        with ranks:  # waited for (or killed) on leaving
            ctx.dead_peer = ranks.dead_peer
            score_into(selector, pool, ctx, out / "artifacts.npz", cleanup=False)
        ctx.notes.append(f"feature extraction shared by {workers} processes"
                         + (_placement(ranks) if isinstance(ranks, RayRanks) else ""))
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
    return {"parts": dict(ctx.timings), "notes": ctx.notes}


def _placement(ranks: RayRanks) -> str:
    """Where a Ray score job's ranks ran, for its notes."""
    nodes = {0: os.environ.get(RAY_NODE_ENV, "?"), **ranks.nodes()}
    return (f" as Ray tasks (placement group {ranks.group}) on {len(set(nodes.values()))} node(s): "
            + ", ".join(f"rank {r} on {n[:12]}" for r, n in sorted(nodes.items())))


def _context(c: ScoreConfig, work_dir: Path, rank: int, world: int, shard_size: int, *,
             own_device: bool = False) -> ScoringContext:
    device = c.device
    if world > 1:
        from selbench.models.ranks import rank_device

        device = rank_device(c.device, rank, world, own_device=own_device)
    return ScoringContext(work_dir=work_dir, target=c.model_path("target"), proxy=c.model_path("proxy"),
                          device=device, batch_size=c.batch_size, rank=rank, world=world, shard_size=shard_size)


def rank_main(args_file: Path, rank: int) -> None:
    """Rank ``rank`` (≥ 1) of a multi-process score job: the selector's ``score`` with this rank's share of the
    extraction; what it returns is dropped (rank 0 writes the outputs)."""
    import torch

    from selbench.models.ranks import parent_watch

    args = json.loads(args_file.read_text())
    torch.set_num_threads(args["threads"])  # rank 0's: the same kernels, the same numbers
    c = ScoreConfig.model_validate(args["config"])
    ctx = _context(c, Path(args["work_dir"]), rank, c.workers, args["shard_size"], own_device=args["own_device"])
    ctx.dead_peer = parent_watch()
    instantiate(c.selector, c.impl, c.config).score(load_manifest(args["manifest"]), ctx)


if __name__ == "__main__":
    rank_main(Path(sys.argv[1]), int(sys.argv[2]))
