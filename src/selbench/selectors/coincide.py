"""COINCIDE (Lee et al. 2024, "Concept-skill transferability-based data selection for LVLMs"; reference code
G-JWLee/COINCIDE_code), with the choices recorded in DESIGN.md.

Features (proxy VLM, forward only up to the last layer needed): outputs of ``self_attn.o_proj`` at the chosen
layers (reference: 3, 7, 11, 15, 19 of TinyLLaVA). Per layer, visual part = mean over image tokens, text part =
mean over the non-padding tokens AFTER the image (as the reference's ``extract_embed.py``, which averages from
just past the image to the end of the conversation; the template tokens before the image are left out); each
part tanh then L2-normalised; all parts concatenated (visual halves first, then the language halves) and
divided by sqrt(2·L) so the vector has unit norm. Text-only rows have a zero visual part and a text part over
all their non-padding tokens (there is no image to come after; the reference reads a fixed offset there, which
for a row without an image lands on text and padding, so it gives no usable rule).

1. Spherical k-means (faiss, niter 50) into K clusters (10,000 for 665K; scaled with N).
2. Transferability T_c = mean cosine between centroid c and the other centroids, on the *language half* only,
   entries > 0.9 masked out (as the reference does; this also drops c itself).
3. Density D_c = mean Gaussian kernel exp(−‖x_i − x_j‖² / 2σ²), σ = 1, over pairs within cluster c.
4. Cluster weights p = softmax((T/D) / temperature), temperature 0.1.
5. Visit clusters by descending weight; each gets round(remaining · p_c) samples (the whole cluster if smaller);
   p is renormalised over the clusters not yet visited.
6. Within a cluster, pick prototypes by greedy MMD minimisation (MMD-critic), keeping running kernel sums so
   each greedy step is O(n) instead of the reference's O(n·m²).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from selbench.models.chat import IMAGE
from selbench.models.extract import FEATURE_DTYPE, masked_mean
from selbench.pool.manifest import Manifest, examples
from selbench.selectors import _features
from selbench.selectors._kmeans import faiss_kmeans, kmeans_note
from selbench.selectors.base import Artifacts, ScoringContext, check_selection, pool_size


class CoincideConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: list[int] = Field(default_factory=lambda: [3, 7, 11, 15, 19])
    n_clusters: int | None = None  # None: 10,000 · N / 665,298, at least 2
    niter: int = 50
    temperature: float = 0.1
    sigma: float = 1.0
    mask_above: float = 0.9
    seed: int = 0  # k-means seed (clustering is part of scoring, shared across selection seeds)


def clusters_for(n: int, per_665k: int) -> int:
    return max(2, min(n, int(round(per_665k * n / 665_298))))


def text_after_image(roles: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the tokens the text part averages — non-padding tokens after a row's last image token;
    every non-padding token of a row without an image."""
    is_img = roles == IMAGE
    pos = torch.arange(roles.shape[1], device=roles.device).expand_as(roles)
    last_img = torch.where(is_img, pos, torch.full_like(pos, -1)).max(dim=1, keepdim=True).values
    return (roles >= 0) & (pos > last_img)


def coincide_features(oproj: dict[int, torch.Tensor], roles: torch.Tensor, layers: list[int]) -> torch.Tensor:
    is_img = roles == IMAGE
    is_txt = text_after_image(roles)
    vis: list[torch.Tensor] = []
    txt: list[torch.Tensor] = []
    for layer in layers:
        h = oproj[layer].float()
        for part, mask in ((vis, is_img), (txt, is_txt)):
            v = torch.tanh(masked_mean(h, mask))
            part.append(torch.nn.functional.normalize(v, dim=-1))
    return torch.cat(vis + txt, dim=-1) / np.sqrt(2 * len(layers))


def spherical_kmeans(x: np.ndarray, k: int, niter: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss spherical k-means (on the GPU when one is visible: ``_kmeans``) → (centroids, labels)."""
    centroids, labels = faiss_kmeans(x, k, niter=niter, seed=seed, spherical=True, max_points_per_centroid=100_000)
    return centroids.astype(np.float64), labels


def transferability(centroids: np.ndarray, mask_above: float) -> np.ndarray:
    lang = centroids[:, centroids.shape[1] // 2:]
    lang = lang / np.clip(np.linalg.norm(lang, axis=1, keepdims=True), 1e-12, None)
    cos = lang @ lang.T
    keep = cos <= mask_above
    return np.where(keep, cos, 0).sum(1) / np.clip(keep.sum(1), 1, None)


def gaussian_kernel(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.exp(-np.clip(d2, 0, None) / (2 * sigma ** 2))


def cluster_members(labels: np.ndarray, k: int) -> list[np.ndarray]:
    """Per cluster, its rows in ascending order (one sort, not a scan of all labels per cluster)."""
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.cumsum(np.bincount(labels, minlength=k))[:-1])


def density(x: np.ndarray, labels: np.ndarray, k: int, sigma: float) -> np.ndarray:
    """Step 3, in float64; ``x`` (possibly memory-mapped float16) is read one cluster at a time."""
    d = np.zeros(k)
    for c, rows in enumerate(cluster_members(labels, k)):
        if len(rows):
            members = x[rows].astype(np.float64)
            d[c] = gaussian_kernel(members, members, sigma).mean()
    return d


def mmd_prototypes(kernel: np.ndarray, m: int) -> np.ndarray:
    """Greedy MMD prototypes with running sums: O(n) per step after the O(n²) kernel.

    J(S) = (2 / (n|S|)) Σ_{i, s∈S} k(x_i, s) − (1 / |S|²) Σ_{s, s'∈S} k(s, s'), maximised greedily (this is
    −MMD²(X, S) up to a constant). Adding c to S of size m changes the sums by colsum[c] and 2·run[c] + k(c,c),
    where run[c] = Σ_{s∈S} k(c, s) is kept up to date with one kernel column per step.
    """
    n = len(kernel)
    colsum = kernel.sum(0)
    diag = np.diag(kernel).copy()
    run = np.zeros(n)  # Σ_{s∈S} k(c, s)
    a_s, b_s = 0.0, 0.0  # Σ_{i,s} k(x_i, s), Σ_{s,s'} k(s, s')
    chosen = np.zeros(n, dtype=bool)
    picks = []
    for step in range(min(m, n)):
        size = step + 1
        gain = 2.0 * (a_s + colsum) / (n * size) - (b_s + 2.0 * run + diag) / size ** 2
        gain[chosen] = -np.inf
        c = int(np.argmax(gain))
        picks.append(c)
        chosen[c] = True
        a_s += colsum[c]
        b_s += 2.0 * run[c] + diag[c]
        run += kernel[:, c]
    return np.asarray(picks, dtype=np.int64)


def mmd_prototypes_naive(kernel: np.ndarray, m: int) -> np.ndarray:
    """Reference formulation: recompute J(S ∪ {c}) from scratch for every candidate."""
    n = len(kernel)
    picks: list[int] = []
    for _ in range(min(m, n)):
        best, best_c = -np.inf, -1
        for c in range(n):
            if c in picks:
                continue
            s = picks + [c]
            j = 2.0 * kernel[:, s].sum() / (n * len(s)) - kernel[np.ix_(s, s)].sum() / len(s) ** 2
            if j > best:
                best, best_c = j, c
        picks.append(best_c)
    return np.asarray(picks, dtype=np.int64)


def allocate(weights: np.ndarray, sizes: np.ndarray, budget: int) -> np.ndarray:
    """Step 5: per-cluster counts, visiting clusters by descending weight."""
    counts = np.zeros(len(sizes), dtype=np.int64)
    order = np.argsort(-weights, kind="stable")
    remaining = budget
    p = weights.astype(np.float64).copy()
    for pos, c in enumerate(order):
        rest = order[pos:]
        share = p[c] / p[rest].sum() if p[rest].sum() > 0 else 1.0 / len(rest)
        take = min(int(sizes[c]), int(round(remaining * share)))
        if pos == len(order) - 1:
            take = min(int(sizes[c]), remaining)
        counts[c] = take
        remaining -= take
    # Rounding can leave a few short when late clusters are small: fill by weight from clusters with room.
    for c in order:
        if remaining <= 0:
            break
        extra = min(int(sizes[c] - counts[c]), remaining)
        counts[c] += extra
        remaining -= extra
    return counts


class CoincideSelector:
    name: ClassVar[str] = "coincide"
    # Bumped whenever the same config gives different results, so stored scores are not reused: 2 = the text
    # part averages only the tokens after the image (as the reference).
    revision: ClassVar[int] = 2
    Config: ClassVar[type[BaseModel]] = CoincideConfig
    needs: ClassVar[frozenset[str]] = frozenset({"proxy"})
    multi_process: ClassVar[bool] = True  # score() may run as several ranks (ScoringContext.rank)

    def __init__(self, config: CoincideConfig):
        self.config = config

    def score(self, pool: Manifest, ctx: ScoringContext) -> Artifacts:
        cfg = self.config
        eng = _features.engine(ctx.require("proxy"), ctx)

        def reduce(batch, cap) -> np.ndarray:
            return coincide_features(cap.oproj, batch.roles, cfg.layers).cpu().numpy()

        with ctx.timed("feature_extraction"):
            x = eng.run(examples(pool), reduce, n_blocks=max(cfg.layers) + 1, oproj=cfg.layers,
                        dtype=FEATURE_DTYPE, shard_dir=ctx.work_dir / "shards", desc="coincide: o_proj features")
        if ctx.rank:  # another rank of a multi-process job: its shards are written, rank 0 scores
            return {}
        with ctx.timed("scoring"):
            artifacts = self.from_features(x, pool)
        ctx.notes.append(f"{len(artifacts['weights'])} clusters, {kmeans_note()}")
        return artifacts

    def from_features(self, x: np.ndarray, pool: Manifest) -> Artifacts:
        """Steps 1–4 on given features (also the bring-your-own-features path)."""
        cfg = self.config
        k = cfg.n_clusters or clusters_for(len(x), 10_000)
        centroids, labels = spherical_kmeans(x, k, cfg.niter, cfg.seed)
        t = transferability(centroids, cfg.mask_above)
        d = density(x, labels, k, cfg.sigma)
        z = (t / np.clip(d, 1e-12, None)) / cfg.temperature
        w = np.exp(z - z.max())
        w /= w.sum()
        return {"n": np.array(len(pool)), "features": x, "labels": labels, "weights": w,
                "transferability": t, "density": d}

    def select(self, artifacts: Artifacts, budget: int, seed: int) -> np.ndarray:
        n = pool_size(artifacts)
        labels, w, x = artifacts["labels"], artifacts["weights"], artifacts["features"]
        sizes = np.bincount(labels, minlength=len(w))
        counts = allocate(w, sizes, budget)
        picks = []
        for c in np.flatnonzero(counts):
            members = np.flatnonzero(labels == c)
            xm = x[members].astype(np.float64)
            kern = gaussian_kernel(xm, xm, self.config.sigma)
            picks.append(members[mmd_prototypes(kern, int(counts[c]))])
        return check_selection(np.concatenate(picks) if picks else np.zeros(0, np.int64), budget, n, self.name)
