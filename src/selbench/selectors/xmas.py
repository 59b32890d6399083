"""XMAS (arXiv 2510.01454; reference BigML-CS-UCLA/XMAS): cross-modal alignment trajectories of a proxy.

1. Fine-tune the proxy (fully) for one epoch on the pool; keep C checkpoints evenly spaced over training
   (default 7; the reference uses every saved checkpoint).
2. At each checkpoint, for each image row and each layer, one attention matrix A (``attention``):
   - ``concat`` (default; the paper's Eq. 4 and the sentence after it): A = softmax(Q Kᵀ / √D), Q and K the raw
     ``q_proj`` / ``k_proj`` outputs with all heads concatenated (D = the full hidden size, no RoPE; with
     grouped-query attention each k head is repeated for its q heads first) — ONE matrix, not a per-head one;
   - ``head_mean`` (the earlier reading, kept for comparison): the mean over heads of the per-head softmax
     attention the model computes (RoPE applied, √head_dim).
   Both use the causal and padding masks the model uses. The cross-modal block of A — text-token rows (every
   non-padding token after the image) × image-token columns — is summed over all layers; the alignment score
   is the sum of its top-5 singular values (§3.2).
3. Trajectory = the C scores; instability = Σ_c |s_{c+1} − s_c| (§3.3).
4. k-means (faiss, 100 iterations as the reference) on trajectories: 1,000 clusters as the paper uses for
   every pool, capped at the number of image rows (``n_clusters: scaled`` gives 1,000 · N / 665,298 instead).
   Text-only rows form one extra cluster.
5. Balanced sampling (Alg. 1): clusters with fewer than ``min_cluster_size`` (3) members are dropped, as the
   reference sampler does (it keeps only clusters of more than two); visit the rest by ascending size; each
   gets remaining // clusters_left, filled with its lowest-instability members (text-only cluster: a seeded
   random draw); a cluster smaller than its share gives all it has and the shortfall carries forward. Rows of
   dropped clusters are never picked by Alg. 1. Where the kept clusters cannot fill the budget the reference
   returns fewer rows than asked; we must return exactly the budget, so only then the rest is filled: first
   the kept clusters' unpicked rows, then the dropped clusters' rows, each by lowest instability (text-only
   rows last, in seeded random order).

Where we differ from the reference code, and why: it computes softmax(K Qᵀ) (its ``attention_scores(k, q)``
is called as ``(q, k)``) over unmasked, padded sequences and takes text rows from a fixed offset; we follow
Eq. 4 with the model's masks and locate image/text tokens from the tokenised input. It leaves k-means and the
text-only draw unseeded; we seed both. It sums approximate top-5 singular values (``svd_lowrank``); we take
exact ones.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from selbench.models.chat import IMAGE
from selbench.models.extract import LayerAttention, ModuleAttention, concat_head_attention, wait_for
from selbench.models.training import TrainConfig, total_steps
from selbench.pool.manifest import Manifest, examples
from selbench.selectors import _features
from selbench.selectors._kmeans import faiss_kmeans, kmeans_note
from selbench.selectors.base import Artifacts, ScoringContext, check_selection, pool_size

TEXT_ONLY = -1
PAPER_CLUSTERS = 1000  # the paper's k for every pool (LLaVA-665K and Vision-Flan alike)


class XmasConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    checkpoints: int = Field(7, ge=2)
    top_singular: int = 5
    # concat: Eq. 4, one matrix from all heads' raw q/k; head_mean: mean of the model's per-head softmaxes
    attention: Literal["concat", "head_mean"] = "concat"
    # an int (capped at the number of image rows) or "scaled": 1,000 · N_image / 665,298, at least 2
    n_clusters: Annotated[int, Field(ge=1)] | Literal["scaled"] = PAPER_CLUSTERS
    niter: int = Field(100, ge=1)  # the reference's k-means iterations
    min_cluster_size: int = Field(3, ge=1)  # the reference samples only from clusters of more than 2
    seed: int = 0  # k-means seed (clustering is part of scoring, shared across selection seeds)
    # the reference's proxy fine-tune (XMAS/scripts/train/finetune.sh): one epoch of the whole pool, LLM and connector
    # full at 2e-5 (cosine, warm-up 0.03), vision tower frozen, 2,048 tokens, global batch 32 (4 GPUs × 8): here 8 × 4
    # accumulation steps on the one device a selection job has
    proxy_training: TrainConfig = Field(default_factory=lambda: TrainConfig(
        method="full", lr=2e-5, projector_lr=None, epochs=1.0, batch_size=8, grad_accum=4))


def checkpoint_steps(total_steps: int, c: int) -> list[int]:
    """C steps evenly spaced over training, the last one at the end."""
    return sorted({max(1, math.ceil(total_steps * (j + 1) / c)) for j in range(c)})


def cluster_count(n_clusters: int | str, n_image_rows: int) -> int:
    """k for the trajectory k-means: the configured count (paper: 1,000) or the scaled one, never more than
    the rows there are to cluster."""
    if n_clusters == "scaled":
        k = max(2, int(round(PAPER_CLUSTERS * n_image_rows / 665_298)))
    else:
        k = int(n_clusters)
    return max(1, min(k, n_image_rows))


def trajectory_clusters(traj: np.ndarray, k: int, niter: int, seed: int) -> np.ndarray:
    """faiss k-means on trajectories [N, C] → a label per row. NaN scores count as 0 (as the reference)."""
    return faiss_kmeans(np.nan_to_num(traj, nan=0.0), k, niter=niter, seed=seed)[1]  # GPU when visible: _kmeans


def layer_attention(variant: str, n_layers: int) -> dict[int, LayerAttention]:
    """Per-layer attention entries for FeatureEngine: each layer's [B, T, T] matrix (step 2)."""
    if variant == "concat":  # Eq. 4: one matrix from all heads' raw q/k
        entry: LayerAttention = ModuleAttention(
            lambda mod, hs, pos, batch: concat_head_attention(mod, hs, batch.attention_mask))
    elif variant == "head_mean":  # mean over heads of the model's own per-head softmax (RoPE)
        entry = lambda probs, batch: probs.mean(1)  # noqa: E731
    else:
        raise ValueError(f"unknown XMAS attention variant {variant!r}")
    return {i: entry for i in range(n_layers)}


def cross_modal_block_sum(attn_sum: torch.Tensor, roles: torch.Tensor, top: int) -> torch.Tensor:
    """attn_sum [B, T, T] (one matrix per layer, summed over layers) → alignment score per row [B]."""
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


def kept_clusters(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Bool per row: its cluster (text-only included) has at least ``min_size`` members. The reference sampler
    visits only clusters of more than two members (``counts > 2``)."""
    _, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    return sizes[inverse] >= min_size


def balanced_sample(labels: np.ndarray, instab: np.ndarray, budget: int, seed: int,
                    min_cluster_size: int = 3) -> np.ndarray:
    """Alg. 1. ``labels`` per row (TEXT_ONLY for the text cluster), ``instab`` (NaN for text rows).

    Clusters under ``min_cluster_size`` are dropped (as the reference); see ``_fill`` for a shortfall."""
    rng = np.random.default_rng(seed)
    kept = kept_clusters(labels, min_cluster_size)
    clusters, sizes = np.unique(labels[kept], return_counts=True)
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
    if remaining > 0:
        picks.append(_fill(np.concatenate(picks) if picks else np.zeros(0, np.int64), kept, instab, remaining,
                           rng))
    return np.concatenate(picks) if picks else np.zeros(0, np.int64)


def _fill(taken_rows: np.ndarray, kept: np.ndarray, instab: np.ndarray, k: int,
          rng: np.random.Generator) -> np.ndarray:
    """``k`` more rows when Alg. 1 falls short (the reference would return fewer than the budget): unpicked
    rows of kept clusters first, then rows of dropped clusters; within each, lowest instability first and
    text-only rows (NaN) last, ties in a seeded random order."""
    taken = np.zeros(len(instab), dtype=bool)
    taken[taken_rows] = True
    left = np.flatnonzero(~taken)
    tiebreak = rng.permutation(len(left))
    key = np.where(np.isnan(instab[left]), np.inf, instab[left])
    order = np.lexsort((tiebreak, key, ~kept[left]))  # last key is primary: kept rows (False) first
    return left[order[:k]]


class XmasSelector:
    name: ClassVar[str] = "xmas"
    # Bumped whenever the same config gives different results, so stored scores are not reused: 2 = Eq. 4's
    # concatenated-head attention, 100 k-means iterations, 1,000 clusters, clusters of ≤ 2 dropped.
    revision: ClassVar[int] = 2
    Config: ClassVar[type[BaseModel]] = XmasConfig
    needs: ClassVar[frozenset[str]] = frozenset({"proxy"})
    # score() may run as several ranks (ScoringContext.rank): rank 0 trains the proxy, all ranks share the extraction
    multi_process: ClassVar[bool] = True

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
        if ctx.rank:  # trained once, by rank 0, exactly as in one process; the other ranks wait for its checkpoints
            wait_for([d / "config.json" for d in dirs], ctx.dead_peer, poll_s=1.0)
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

        train(model, collator, examples(pool), cfg, checkpoint_at=steps, on_checkpoint=save)
        return dirs

    def score(self, pool: Manifest, ctx: ScoringContext) -> Artifacts:
        cfg = self.config
        with ctx.timed("proxy_training"):
            ckpts = self._train_proxy(pool, ctx)
        rows = np.flatnonzero(pool.has_image.to_numpy())
        with ctx.timed("feature_extraction"):
            traj = self.alignment_trajectories(ckpts, examples(pool, rows), ctx)
        if ctx.rank:  # another rank of a multi-process job: its shards are written, rank 0 scores
            return {}
        with ctx.timed("scoring"):
            instab = instability(traj)
            k = cluster_count(cfg.n_clusters, len(rows))
            labels = np.full(len(pool), TEXT_ONLY, dtype=np.int64)
            if len(rows):
                labels[rows] = trajectory_clusters(traj, k, cfg.niter, cfg.seed)
        instab_all = np.full(len(pool), np.nan)
        instab_all[rows] = instab
        dropped = ~kept_clusters(labels, cfg.min_cluster_size)
        ctx.notes.append(f"{k} trajectory clusters ({kmeans_note()}) + 1 text-only cluster "
                         f"({len(pool) - len(rows)} rows); "
                         f"{len(ckpts)} checkpoints; {cfg.attention} attention; {int(dropped.sum())} rows in "
                         f"clusters under {cfg.min_cluster_size} members (picked only to fill a shortfall)")
        return {"n": np.array(len(pool)), "rows": rows, "trajectories": traj, "instability": instab_all,
                "labels": labels}

    def alignment_trajectories(self, ckpts: list, image_examples: list, ctx: ScoringContext) -> np.ndarray:
        """Steps 2–3: [N_image, C] alignment scores, one column per checkpoint."""
        cfg = self.config
        traj = np.zeros((len(image_examples), len(ckpts)))
        for c, ckpt in enumerate(ckpts):
            eng = _features.engine(ckpt, ctx)
            n_layers = len(eng.model.model.language_model.layers)

            def reduce(batch, cap, n_layers=n_layers) -> np.ndarray:
                total = sum(cap.attention[i] for i in range(n_layers))
                return cross_modal_block_sum(total.cpu(), batch.roles.cpu(), cfg.top_singular).numpy()

            traj[:, c] = eng.run(image_examples, reduce, n_blocks=None,
                                 attention=layer_attention(cfg.attention, n_layers),
                                 shard_dir=ctx.work_dir / f"shards-{cfg.attention}-{c}",
                                 desc=f"xmas: checkpoint {c + 1}")
        return traj

    def select(self, artifacts: Artifacts, budget: int, seed: int) -> np.ndarray:
        n = pool_size(artifacts)
        picks = balanced_sample(artifacts["labels"], artifacts["instability"], budget, seed,
                                self.config.min_cluster_size)
        return check_selection(picks, budget, n, self.name)
