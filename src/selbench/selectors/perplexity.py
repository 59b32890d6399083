"""Perplexity, middle band (Marion et al. 2023, "When Less is More: Investigating Data Pruning for Pretraining
LLMs at Scale"): score each sample by the target's perplexity on its assistant tokens,
``PPL(x) = exp(mean_t NLL(x_t))`` over answer tokens only, then keep the middle of the ascending ranking,
positions ``[N/2 − k/2, N/2 + k/2)`` — the paper's best-performing band. Text-only rows are scored like any
other (their answer tokens have a perplexity too). Deterministic: the seed is unused.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from selbench.models.chat import ANSWER
from selbench.pool.manifest import Manifest, examples
from selbench.selectors import _features
from selbench.selectors.base import Artifacts, ScoringContext, SelectionError, check_selection, pool_size


class PerplexityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    band: Literal["middle", "low", "high"] = "middle"


class PerplexitySelector:
    name: ClassVar[str] = "perplexity"
    Config: ClassVar[type[BaseModel]] = PerplexityConfig
    needs: ClassVar[frozenset[str]] = frozenset({"target"})
    multi_process: ClassVar[bool] = True  # score() may run as several ranks (ScoringContext.rank)

    def __init__(self, config: PerplexityConfig):
        self.config = config

    def score(self, pool: Manifest, ctx: ScoringContext) -> Artifacts:
        eng = _features.engine(ctx.require("target"), ctx)

        def reduce(batch, cap) -> np.ndarray:
            logits = cap.logits[:, :-1].float()
            target = batch.input_ids[:, 1:]
            is_answer = batch.roles[:, 1:] == ANSWER
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            mean_nll = (nll * is_answer).sum(1) / is_answer.sum(1).clamp(min=1)
            return torch.exp(mean_nll).cpu().numpy()

        with ctx.timed("feature_extraction"):
            ppl = eng.run(examples(pool), reduce, n_blocks=None, logits=True,
                          shard_dir=ctx.work_dir / "shards", desc="perplexity")
        return {"n": np.array(len(pool)), "perplexity": ppl.astype(np.float64)}

    def select(self, artifacts: Artifacts, budget: int, seed: int) -> np.ndarray:
        n = pool_size(artifacts)
        if budget > n:
            raise SelectionError(f"budget {budget} exceeds the pool size {n}")
        order = np.argsort(artifacts["perplexity"], kind="stable")  # ascending
        start = {"low": 0, "high": n - budget, "middle": n // 2 - budget // 2}[self.config.band]
        start = min(max(0, start), n - budget)
        return check_selection(order[start:start + budget], budget, n, self.name)
