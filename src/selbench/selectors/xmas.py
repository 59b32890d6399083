"""XMAS (arXiv 2510.01454; reference BigML-CS-UCLA/XMAS): cross-modal alignment trajectories of a proxy.

1. Fine-tune the proxy (fully) for one epoch on the pool; keep C checkpoints evenly spaced over training
   (default 7; the reference uses every saved checkpoint).
2. At each checkpoint, for each image row: the cross-modal block of the attention — text-token rows (every
   non-padding token after the image) × image-token columns, head-averaged, with the causal and padding masks
   the model uses — summed over all layers. Alignment score = sum of its top-5 singular values (§3.2).
3. Trajectory = the C scores; instability = Σ_c |s_{c+1} − s_c| (§3.3).
4. k-means (faiss) on trajectories: 1,000 clusters for 665K, scaled with N. Text-only rows form one extra
   cluster.
5. Balanced sampling (Alg. 1): visit clusters by ascending size; each gets remaining // clusters_left, filled
   with its lowest-instability members (text-only cluster: a seeded random draw); a cluster smaller than its
   share gives all it has and the shortfall carries forward. Seeded everywhere (the reference leaves text-only
   sampling unseeded and recomputes attention without masks — we don't).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from selbench.models.chat import IMAGE
from selbench.models.training import TrainConfig, total_steps
from selbench.pool.manifest import Manifest
from selbench.selectors import _features
from selbench.selectors.base import Artifacts, ScoringContext, check_selection, pool_size

TEXT_ONLY = -1


class XmasConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    checkpoints: int = Field(7, ge=2)
    top_singular: int = 5
    n_clusters: int | None = None  # None: 1,000 · N / 665,298, at least 2
    niter: int = 25
    seed: int = 0
    proxy_training: TrainConfig = Field(default_factory=lambda: TrainConfig(
        method="full", lr=2e-5, projector_lr=None, epochs=1.0, batch_size=16))


def checkpoint_steps(total_steps: int, c: int) -> list[int]:
    """C steps evenly spaced over training, the last one at the end."""
    return sorted({max(1, math.ceil(total_steps * (j + 1) / c)) for j in range(c)})


def cross_modal_block_sum(attn_sum: torch.Tensor, roles: torch.Tensor, top: int) -> torch.Tensor:
    """attn_sum [B, T, T] (head-averaged, summed over layers) → alignment score per row [B]."""
    scores = torch.zeros(len(roles), dtype=torch.float32)
    for b in range(len(roles)):
        img = torch.nonzero(roles[b] == IMAGE).flatten()
        if len(img) == 0:
            scores[b] = float("nan")
            continue
        text = torch.nonzero((roles[b] >= 0) & (torch.arange(roles.shape[1]) > img.max())).flatten()
        block = attn_sum[b][text][:, img].double()
        sv = torch.linalg.svdvals(block)
        scores[b] = float(sv[:top].sum())
    return scores


def instability(trajectories: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(trajectories, axis=1)).sum(axis=1)


def balanced_sample(labels: np.ndarray, instab: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """Alg. 1. ``labels`` per row (TEXT_ONLY for the text cluster), ``instab`` (NaN for text rows)."""
    rng = np.random.default_rng(seed)
    clusters, sizes = np.unique(labels, return_counts=True)
    order = clusters[np.argsort(sizes, kind="stable")]
    remaining, picks = budget, []
    for pos, c in enumerate(order):
        members = np.flatnonzero(labels == c)
        share = remaining // (len(order) - pos)
        take = min(len(members), share)
        if c == TEXT_ONLY:
            chosen = rng.permutation(members)[:take]
        else:
            chosen = members[np.argsort(instab[members], kind="stable")[:take]]
        picks.append(chosen)
        remaining -= take
    if remaining > 0:  # floor division can leave a remainder after the last cluster: most stable left over
        taken = np.zeros(len(labels), dtype=bool)
        taken[np.concatenate(picks)] = True
        left = np.flatnonzero(~taken)
        key = np.where(np.isnan(instab[left]), np.inf, instab[left])
        picks.append(left[np.argsort(key, kind="stable")[:remaining]])
    return np.concatenate(picks)


class XmasSelector:
    name: ClassVar[str] = "xmas"
    Config: ClassVar[type[BaseModel]] = XmasConfig
    needs: ClassVar[frozenset[str]] = frozenset({"proxy"})

    def __init__(self, config: XmasConfig):
        self.config = config

    def _train_proxy(self, pool: Manifest, ctx: ScoringContext) -> list:
        """Fine-tune the proxy, saving C checkpoints; returns their folders (reused if already complete)."""
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        from selbench.models.data import Collator
        from selbench.models.training import train

        cfg = self.config.proxy_training
        steps = checkpoint_steps(total_steps(len(pool), cfg)[1], self.config.checkpoints)
        dirs = [ctx.work_dir / "checkpoints" / f"step-{s:07d}" for s in steps]
        if all((d / "config.json").exists() for d in dirs):
            return dirs
        proxy = ctx.require("proxy")
        model = LlavaForConditionalGeneration.from_pretrained(proxy, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(proxy)
        collator = Collator(processor, int(model.config.image_seq_length), max_length=cfg.max_length)

        def save(step: int, m) -> None:
            out = ctx.work_dir / "checkpoints" / f"step-{step:07d}"
            tmp = out.with_name(out.name + ".tmp")
            m.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            tmp.rename(out)

        train(model, collator, _features.examples(pool), cfg, checkpoint_at=steps, on_checkpoint=save)
        return dirs

    def score(self, pool: Manifest, ctx: ScoringContext) -> Artifacts:
        cfg = self.config
        with ctx.timed("proxy_training"):
            ckpts = self._train_proxy(pool, ctx)
        rows = np.flatnonzero(pool.has_image.to_numpy())
        image_examples = _features.examples(pool, rows)
        traj = np.zeros((len(rows), len(ckpts)))
        with ctx.timed("feature_extraction"):
            for c, ckpt in enumerate(ckpts):
                eng = _features.engine(ckpt, ctx.device, ctx.batch_size)
                n_layers = len(eng.model.model.language_model.layers)

                def reduce(batch, cap) -> np.ndarray:
                    total = sum(cap.attention[i] for i in range(n_layers))
                    return cross_modal_block_sum(total.cpu(), batch.roles.cpu(), cfg.top_singular).numpy()

                head_avg = {i: (lambda probs, batch: probs.mean(1)) for i in range(n_layers)}
                traj[:, c] = eng.run(image_examples, reduce, n_blocks=None, attention=head_avg,
                                     shard_dir=ctx.work_dir / f"shards-{c}", desc=f"xmas: checkpoint {c + 1}")
        with ctx.timed("scoring"):
            instab = instability(traj)
            k = cfg.n_clusters or max(2, min(len(rows), int(round(1000 * len(rows) / 665_298))))
            import faiss

            km = faiss.Kmeans(traj.shape[1], k, niter=cfg.niter, seed=cfg.seed, verbose=False)
            x32 = np.ascontiguousarray(traj, dtype=np.float32)
            km.train(x32)
            labels_img = km.index.search(x32, 1)[1][:, 0]
        labels = np.full(len(pool), TEXT_ONLY, dtype=np.int64)
        labels[rows] = labels_img
        instab_all = np.full(len(pool), np.nan)
        instab_all[rows] = instab
        ctx.notes.append(f"{k} trajectory clusters + 1 text-only cluster ({len(pool) - len(rows)} rows); "
                         f"{len(ckpts)} checkpoints")
        return {"n": np.array(len(pool)), "rows": rows, "trajectories": traj, "instability": instab_all,
                "labels": labels}

    def select(self, artifacts: Artifacts, budget: int, seed: int) -> np.ndarray:
        n = pool_size(artifacts)
        picks = balanced_sample(artifacts["labels"], artifacts["instability"], budget, seed)
        return check_selection(picks, budget, n, self.name)
