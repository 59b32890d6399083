"""Random: a seeded permutation of the pool, first ``budget`` (the baseline every paper reports)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from selbench.pool.manifest import Manifest
from selbench.selectors.base import Artifacts, ScoringContext, check_selection, pool_size


class RandomConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RandomSelector:
    name: ClassVar[str] = "random"
    Config: ClassVar[type[BaseModel]] = RandomConfig
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: RandomConfig):
        self.config = config

    def score(self, pool: Manifest, ctx: ScoringContext) -> Artifacts:
        return {"n": np.array(len(pool))}

    def select(self, artifacts: Artifacts, budget: int, seed: int) -> np.ndarray:
        n = pool_size(artifacts)
        return check_selection(np.random.default_rng(seed).permutation(n)[:budget], budget, n, self.name)
