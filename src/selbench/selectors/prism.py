"""PRISM (arXiv 2502.12119): self-pruning by intrinsic selection — no proxy, no training.

1. F_i = mean over the image tokens of the target's first decoder block output (block index 0; HF's
   ``hidden_states[1]`` on the uncut model). With the image first and causal attention this depends only on
   the image, so it is computed once per unique image.
2. Pearson correlation between samples: centre each F_i by its own scalar mean (``centering: row``, the
   paper's first version) or by the corpus mean vector (``corpus``, later versions); ρ_ij = u_i · u_j with
   u_i the unit-normalised centred vector.
3. Redundancy R_i = mean_{j≠i} ρ_ij; keep the *lowest*.

Exact in O(N·d): with S = Σ_j u_j, R_i = (u_i · S − 1) / (N − 1) (the −1 removes ρ_ii = 1). Note the trap:
centred but *un-normalised* vectors under corpus centring sum to zero, so u_i·S must use normalised u.

Text-only rows have no visual feature; they are always kept (they take part of the budget first; if there are
more of them than the budget, a seeded random subset of them is taken).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from selbench.models.chat import IMAGE
from selbench.models.data import Example
from selbench.models.extract import masked_mean
from selbench.pool.manifest import Manifest
from selbench.selectors import _features
from selbench.selectors.base import Artifacts, ScoringContext, check_selection, pool_size, top_k


class PrismConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layer: int = 0  # decoder block whose output is read
    centering: Literal["row", "corpus"] = "row"


def centred_unit(features: np.ndarray, centering: str) -> np.ndarray:
    x = features.astype(np.float64)
    x = x - (x.mean(axis=1, keepdims=True) if centering == "row" else x.mean(axis=0, keepdims=True))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def redundancy_scores(features: np.ndarray, centering: str = "row") -> np.ndarray:
    """R_i = mean_{j≠i} Pearson(F_i, F_j), exactly, in O(N·d)."""
    u = centred_unit(features, centering)
    n = len(u)
    if n < 2:
        return np.zeros(n)
    s = u.sum(axis=0)
    return (u @ s - 1.0) / (n - 1)


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

    def __init__(self, config: PrismConfig):
        self.config = config

    def score(self, pool: Manifest, ctx: ScoringContext) -> Artifacts:
        frame = pool.frame
        has_image = frame["image"].notna().to_numpy()
        # One representative row per unique image content (sha256), else per path.
        key = frame["image_sha256"].fillna(frame["image"]).where(has_image)
        firsts = key[has_image].drop_duplicates().index.to_numpy()
        layer = self.config.layer
        eng = _features.engine(ctx.require("target"), ctx.device, ctx.batch_size)

        def reduce(batch, cap) -> np.ndarray:
            return masked_mean(cap.blocks[layer].float(), batch.roles == IMAGE).cpu().numpy()

        with ctx.timed("feature_extraction"):
            # Causal attention: the image positions' outputs do not depend on the text after them, so each
            # unique image runs once with just the template prefix and no question.
            prefixes = [Example([("user", "")], pool.image_path(int(i))) for i in firsts]
            per_image = eng.run(prefixes, reduce, n_blocks=layer + 1, blocks=[layer],
                                shard_dir=ctx.work_dir / "shards", desc="prism: block outputs")
        with ctx.timed("scoring"):
            where = {k: r for r, k in enumerate(key[firsts])}
            image_rows = np.flatnonzero(has_image)
            feats = per_image[[where[k] for k in key[image_rows]]]
            red = np.full(len(pool), np.nan)
            red[image_rows] = redundancy_scores(feats, self.config.centering)
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
