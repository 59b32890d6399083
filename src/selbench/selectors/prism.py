"""PRISM (arXiv 2502.12119): self-pruning by intrinsic selection — no proxy, no training.

1. F_i = mean over the image tokens of the target's first decoder block output (block index 0; HF's
   ``hidden_states[1]`` on the uncut model). With the image first and causal attention this depends only on
   the image, so it is computed once per unique image.
2. Pearson correlation between samples: centre each F_i by its own scalar mean (``centering: row``, the
   paper's first version) or by the corpus mean vector (``corpus``, later versions); ρ_ij = u_i · u_j with
   u_i the unit-normalised centred vector.
3. Redundancy R_i = mean_{j≠i} ρ_ij; keep the *lowest*.

Exact in O(N·d): with S = Σ_j u_j, R_i = (u_i · S − 1) / (N − 1) (the −1 removes ρ_ii = 1). Note the trap:
centred but *un-normalised* vectors under corpus centring sum to zero, so u_i·S must use normalised u. The sums
run over blocks of rows in float64, so the features may be memory-mapped float16 (665K × 4096: 5.4 GB on disk)
and the memory used stays one block, whatever N is; rows that share an image are counted through their image's
feature row instead of being copied.

Text-only rows have no visual feature; they are always kept (they take part of the budget first; if there are
more of them than the budget, a seeded random subset of them is taken).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from selbench.models.chat import IMAGE
from selbench.models.data import Example
from selbench.models.extract import FEATURE_DTYPE, masked_mean
from selbench.pool.manifest import Manifest
from selbench.selectors import _features
from selbench.selectors.base import Artifacts, ScoringContext, check_selection, pool_size, row_blocks, top_k


class PrismConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layer: int = 0  # decoder block whose output is read
    centering: Literal["row", "corpus"] = "row"


def centred_unit(features: np.ndarray, centering: str) -> np.ndarray:
    x = features.astype(np.float64)
    x = x - (x.mean(axis=1, keepdims=True) if centering == "row" else x.mean(axis=0, keepdims=True))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def redundancy_scores(features: np.ndarray, centering: str = "row", counts: np.ndarray | None = None) -> np.ndarray:
    """R_i = mean_{j≠i} Pearson(F_i, F_j), exactly, in O(N·d), a block of rows at a time (float64).

    ``counts``: how many pool rows each feature row stands for (PRISM extracts once per unique image); the result,
    per feature row, is what those rows repeated that often would give each of them.

    Two passes over the features: the first finds each row's centre a_i (its own mean, or the corpus mean μ,
    found in a pass before) and centred norm n_i, and S = Σ_j u_j; the second needs only x_i·S, since
    u_i·S = (x_i·S − a_i·S) / n_i (a_i·S is m_i·ΣS for row centring, where ΣS ≈ 0, or μ·S)."""
    n = len(features)
    w = np.ones(n) if counts is None else np.asarray(counts, dtype=np.float64)
    total = float(w.sum())
    if total < 2:
        return np.zeros(n)
    d = features.shape[1]
    mean = np.zeros(d)
    if centering == "corpus":
        for b in row_blocks(n):
            mean += w[b] @ features[b].astype(np.float64)
        mean /= total
    s, norms, row_means = np.zeros(d), np.empty(n), np.zeros(n)
    for b in row_blocks(n):
        xc = features[b].astype(np.float64)
        if centering == "row":
            row_means[b] = xc.mean(axis=1)
            xc -= row_means[b, None]
        else:
            xc -= mean
        nb = np.sqrt(np.einsum("ij,ij->i", xc, xc))
        norms[b] = np.where(nb == 0, 1.0, nb)  # a constant row: u = 0
        s += (w[b] / norms[b]) @ xc
    centre_dot_s = row_means * s.sum() if centering == "row" else mean @ s
    dots = np.concatenate([features[b].astype(np.float64) @ s for b in row_blocks(n)])
    return ((dots - centre_dot_s) / norms - 1.0) / (total - 1)


def redundancy_scores_pairwise(features: np.ndarray, centering: str = "row") -> np.ndarray:
    """The O(N²) definition, for tests and benchmarks."""
    u = centred_unit(features, centering)
    rho = u @ u.T
    np.fill_diagonal(rho, 0.0)
    return rho.sum(axis=1) / (len(u) - 1)


class PrismSelector:
    name: ClassVar[str] = "prism"
    Config: ClassVar[type[BaseModel]] = PrismConfig
    needs: ClassVar[frozenset[str]] = frozenset({"target"})
    multi_process: ClassVar[bool] = True  # score() may run as several ranks (ScoringContext.rank)

    def __init__(self, config: PrismConfig):
        self.config = config

    def score(self, pool: Manifest, ctx: ScoringContext) -> Artifacts:
        frame = pool.frame
        has_image = frame["image"].notna().to_numpy()
        # One representative row per unique image content (sha256), else per path.
        key = frame["image_sha256"].fillna(frame["image"]).where(has_image)
        firsts = key[has_image].drop_duplicates().index.to_numpy()
        layer = self.config.layer
        eng = _features.engine(ctx.require("target"), ctx)

        def reduce(batch, cap) -> np.ndarray:
            return masked_mean(cap.blocks[layer].float(), batch.roles == IMAGE).cpu().numpy()

        with ctx.timed("feature_extraction"):
            # Causal attention: the image positions' outputs do not depend on the text after them, so each
            # unique image runs once with just the template prefix and no question.
            prefixes = [Example([("user", "")], pool.image_path(int(i))) for i in firsts]
            per_image = eng.run(prefixes, reduce, n_blocks=layer + 1, blocks=[layer], dtype=FEATURE_DTYPE,
                                shard_dir=ctx.work_dir / "shards", desc="prism: block outputs")
        if ctx.rank:  # another rank of a multi-process job: its shards are written, rank 0 scores
            return {}
        with ctx.timed("scoring"):
            where = {k: r for r, k in enumerate(key[firsts])}
            image_rows = np.flatnonzero(has_image)
            image_of = np.array([where[k] for k in key[image_rows]], dtype=np.int64)  # row → its image's feature
            counts = np.bincount(image_of, minlength=len(firsts))
            red = np.full(len(pool), np.nan)
            red[image_rows] = redundancy_scores(per_image, self.config.centering, counts)[image_of]
        ctx.notes.append(f"{len(firsts)} unique images for {len(image_rows)} image rows; "
                         f"{int((~has_image).sum())} text-only rows always kept")
        return {"n": np.array(len(pool)), "redundancy": red, "image_features": per_image,
                "image_rows": image_rows}

    def from_features(self, features: np.ndarray, pool: Manifest) -> Artifacts:
        """Bring-your-own features: one row per sample, NaN rows for samples without a visual feature."""
        image_rows = np.flatnonzero(~np.isnan(features).any(axis=1))
        red = np.full(len(pool), np.nan)
        red[image_rows] = redundancy_scores(features[image_rows], self.config.centering)
        return {"n": np.array(len(pool)), "redundancy": red, "image_rows": image_rows}

    def select(self, artifacts: Artifacts, budget: int, seed: int) -> np.ndarray:
        n = pool_size(artifacts)
        red = artifacts["redundancy"]
        text_rows = np.flatnonzero(np.isnan(red))
        if len(text_rows) >= budget:
            keep = np.random.default_rng(seed).permutation(text_rows)[:budget]
            return check_selection(np.sort(keep), budget, n, self.name)
        image_rows = np.flatnonzero(~np.isnan(red))
        chosen = image_rows[top_k(red[image_rows], budget - len(text_rows), largest=False)]
        return check_selection(np.concatenate([text_rows, chosen]), budget, n, self.name)
