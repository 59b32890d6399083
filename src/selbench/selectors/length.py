"""Length: the longest samples. LLaVA's ``lengths`` counts words + 128 per image; we count the *text tokens*
of the templated conversation under the target's tokenizer (image tokens excluded), so "long" means the same
thing the fine-tune pays for. Text-only rows compete on equal terms. Deterministic: the seed is unused."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from selbench.models.chat import IMAGE, encode
from selbench.pool.manifest import Manifest
from selbench.selectors.base import Artifacts, ScoringContext, check_selection, pool_size, top_k


class LengthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LengthSelector:
    name: ClassVar[str] = "length"
    Config: ClassVar[type[BaseModel]] = LengthConfig
    needs: ClassVar[frozenset[str]] = frozenset({"target"})  # for its tokenizer only

    def __init__(self, config: LengthConfig):
        self.config = config

    def score(self, pool: Manifest, ctx: ScoringContext) -> Artifacts:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ctx.require("target"))
        with ctx.timed("scoring"):
            lengths = np.array([
                int((encode(tok, pool.turns(i), False, 0).roles != IMAGE).sum()) for i in range(len(pool))
            ])
        return {"n": np.array(len(pool)), "text_tokens": lengths}

    def select(self, artifacts: Artifacts, budget: int, seed: int) -> np.ndarray:
        n = pool_size(artifacts)
        return check_selection(top_k(artifacts["text_tokens"], budget), budget, n, self.name)
