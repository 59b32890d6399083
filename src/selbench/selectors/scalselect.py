"""ScalSelect (arXiv 2602.11636): scalable selection by leverage scores of instruction-attended visual features.

Per sample, in the target's first decoder block (index 0):
1. α_j = Σ_{t ∈ instruction tokens} Ā_{t,j}: head-averaged attention from the user's instruction tokens to
   visual token j (eq. 3–4).
2. Sort α descending and keep tokens until their cumulative mass reaches τ·Σα (τ = 0.9, inclusive) (eq. 5).
3. x_i = mean of the block's outputs at the kept visual tokens (eq. 6).
Over the pool:
4. Column-centre X; k = the smallest rank whose spectral energy Σ_{j≤k} σ_j² ≥ 0.9 Σ σ² (eq. 8).
5. Leverage π_i = ‖U_k[i]‖² (eq. 9), top-budget.

Exact and cheap: eigendecompose XᵀX = V Λ Vᵀ (d × d, float64), then π_i = Σ_{j≤k} (x_i·v_j)² / λ_j — the same
as the row norms of U_k from a full SVD, at O(N·d² + d³) instead of O(N²·d). X is read a block of rows at a time,
so it may be memory-mapped float16 (665K × 4096: 5.4 GB on disk) with memory for one block and the d × d matrices.
Rows without an image are dropped from scoring and never selected (stated in the output notes).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from selbench.models.chat import IMAGE, INSTRUCTION
from selbench.models.extract import FEATURE_DTYPE, masked_mean
from selbench.pool.manifest import Manifest, examples
from selbench.selectors import _features
from selbench.selectors.base import (
    ROW_BLOCK,
    Artifacts,
    ScoringContext,
    SelectionError,
    check_selection,
    pool_size,
    row_blocks,
    top_k,
)


class ScalSelectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layer: int = 0
    tau: float = Field(0.9, gt=0, le=1)  # attention mass kept per sample
    energy: float = Field(0.9, gt=0, le=1)  # spectral energy that fixes k


def kept_visual_tokens(probs: torch.Tensor, roles: torch.Tensor, tau: float) -> torch.Tensor:
    """Eqs. 3–5 for a batch: probs [B, H, T, T], roles [B, T] → bool [B, T], the visual tokens kept."""
    attn = probs.mean(1)  # head average [B, T, T]
    is_img = roles == IMAGE
    instr = (roles == INSTRUCTION).to(attn.dtype)
    alpha = (attn * instr.unsqueeze(-1)).sum(1)  # [B, T]: Σ over instruction rows, per key column
    alpha = torch.where(is_img, alpha, torch.zeros_like(alpha))
    order = alpha.argsort(dim=1, descending=True)
    sorted_a = alpha.gather(1, order)
    cum = sorted_a.cumsum(1)
    total = sorted_a.sum(1, keepdim=True)
    # keep a token if the mass *before* it is still short of τ·total (the crossing token is kept: inclusive)
    keep_sorted = (cum - sorted_a) < tau * total
    keep_sorted &= is_img.gather(1, order)
    return torch.zeros_like(is_img).scatter(1, order, keep_sorted)


def rank_for_energy(eigvals_desc: np.ndarray, energy: float) -> int:
    cum = np.cumsum(eigvals_desc)
    return int(np.searchsorted(cum, energy * cum[-1] - 1e-12 * cum[-1]) + 1)


def leverage_scores(x: np.ndarray, energy: float = 0.9) -> tuple[np.ndarray, int]:
    """π_i = ‖U_k[i]‖² of the column-centred X, through the d × d Gram matrix, a block of rows at a time.

    Two passes over X. The first accumulates the Gram matrix of X − c, c a provisional centre (the first block's
    mean), and the column sums; the exact centred Gram is then Σ (x−c)(x−c)ᵀ − N (μ−c)(μ−c)ᵀ (the shifted-data
    formula: stable while c is near the mean μ, and no pass just for μ). The second projects onto the top k
    eigenvectors. Sums over blocks and the eigendecomposition are float64; within a block the products are float64,
    except for float16 features (``FEATURE_DTYPE``): there they run in float32, about twice as fast on CPU, whose
    rounding (2⁻²⁴ per product) stays far below the float16 storage's own (2⁻¹¹ per value)."""
    if len(x) == 0:  # no row has an image (the engine returns shape (0,) then)
        return np.zeros(0), 0
    n, d = x.shape
    work = np.float32 if x.dtype == np.float16 else np.float64
    buf = np.empty((min(n, ROW_BLOCK), d), dtype=work)  # one block, converted and centred in one step

    def centred(b: slice, centre: np.ndarray) -> np.ndarray:
        return np.subtract(x[b], centre, out=buf[:b.stop - b.start], dtype=work)

    shift = x[:ROW_BLOCK].mean(axis=0, dtype=np.float64).astype(work)
    sums, gram = np.zeros(d), np.zeros((d, d))
    for b in row_blocks(n):
        xs = centred(b, shift)
        sums += xs.sum(axis=0, dtype=np.float64)
        gram += xs.T @ xs
    delta = sums / n  # μ − c
    gram -= n * np.outer(delta, delta)
    centre = (shift + delta).astype(work)  # μ
    lam, v = np.linalg.eigh(gram)
    lam, v = lam[::-1], v[:, ::-1]
    lam = np.clip(lam, 0.0, None)
    k = rank_for_energy(lam, energy)
    vk = np.ascontiguousarray(v[:, :k], dtype=work)
    lev = np.empty(n)
    for b in row_blocks(n):
        proj = (centred(b, centre) @ vk).astype(np.float64)
        lev[b] = (proj ** 2 / lam[:k]).sum(axis=1)
    return lev, k


def leverage_scores_svd(x: np.ndarray, energy: float = 0.9) -> tuple[np.ndarray, int]:
    """Reference: row norms of U_k from a full (thin) SVD."""
    xc = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    k = rank_for_energy(s ** 2, energy)
    return (u[:, :k] ** 2).sum(axis=1), k


class ScalSelectSelector:
    name: ClassVar[str] = "scalselect"
    Config: ClassVar[type[BaseModel]] = ScalSelectConfig
    needs: ClassVar[frozenset[str]] = frozenset({"target"})
    multi_process: ClassVar[bool] = True  # score() may run as several ranks (ScoringContext.rank)

    def __init__(self, config: ScalSelectConfig):
        self.config = config

    def features(self, pool: Manifest, ctx: ScoringContext, rows: np.ndarray) -> np.ndarray:
        eng = _features.engine(ctx.require("target"), ctx)
        layer, tau = self.config.layer, self.config.tau

        def reduce(batch, cap) -> np.ndarray:  # eq. 6: mean block output over the kept visual tokens
            return masked_mean(cap.blocks[layer].float(), cap.attention[layer]).cpu().numpy()

        return eng.run(examples(pool, rows), reduce, n_blocks=layer + 1, blocks=[layer],
                       attention={layer: lambda probs, batch: kept_visual_tokens(probs, batch.roles, tau)},
                       dtype=FEATURE_DTYPE, shard_dir=ctx.work_dir / "shards",
                       desc="scalselect: attended visual features")

    def score(self, pool: Manifest, ctx: ScoringContext) -> Artifacts:
        rows = np.flatnonzero(pool.has_image.to_numpy())
        with ctx.timed("feature_extraction"):
            x = self.features(pool, ctx, rows)
        if ctx.rank:  # another rank of a multi-process job: its shards are written, rank 0 scores
            return {}
        with ctx.timed("scoring"):
            lev, k = leverage_scores(x, self.config.energy)
        dropped = len(pool) - len(rows)
        ctx.notes.append(f"{dropped} rows without an image dropped from scoring; rank k = {k}")
        return {"n": np.array(len(pool)), "rows": rows, "leverage": lev, "features": x, "k": np.array(k)}

    def from_features(self, features: np.ndarray, pool: Manifest) -> Artifacts:
        """Bring-your-own x_i: one row per sample, NaN rows are dropped from scoring."""
        rows = np.flatnonzero(~np.isnan(features).any(axis=1))
        lev, k = leverage_scores(features[rows], self.config.energy)
        return {"n": np.array(len(pool)), "rows": rows, "leverage": lev, "k": np.array(k)}

    def select(self, artifacts: Artifacts, budget: int, seed: int) -> np.ndarray:
        n, rows = pool_size(artifacts), artifacts["rows"]
        if budget > len(rows):
            raise SelectionError(f"scalselect scores only rows with an image: budget {budget} exceeds the "
                                 f"{len(rows)} image rows of this pool")
        return check_selection(rows[top_k(artifacts["leverage"], budget)], budget, n, self.name)
