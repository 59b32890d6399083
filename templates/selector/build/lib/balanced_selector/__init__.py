"""Skill-balanced random selection: split the budget evenly over the pool's task types (the manifest's ``skill``
column: captioning, VQA, multiple choice, …), give leftover slots to the largest groups, and draw each group's
share uniformly with the seed. A diversity baseline in the spirit of the task-balanced sampling Vision-Flan and
COINCIDE discuss; it needs no model.

The selector protocol (selbench.selectors.base): ``score`` does the expensive, budget-independent work once and
returns arrays (saved as the job's artifacts, reused for every budget and seed); ``select`` turns artifacts + budget +
seed into exactly ``budget`` distinct pool indices — deterministically for a given seed.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from selbench.selectors.base import check_selection, pool_size


class BalancedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown config keys are errors


class BalancedSelector:
    name: ClassVar[str] = "balanced"
    Config: ClassVar[type[BaseModel]] = BalancedConfig
    needs: ClassVar[frozenset[str]] = frozenset()  # {"target"} / {"proxy"} when the method runs a model

    def __init__(self, config: BalancedConfig):
        self.config = config

    def score(self, pool, ctx) -> dict[str, np.ndarray]:
        _, group = np.unique(pool.frame["skill"].astype(str).to_numpy(), return_inverse=True)
        return {"n": np.array(len(pool)), "group": group.astype(np.int64)}

    def select(self, artifacts: dict[str, np.ndarray], budget: int, seed: int) -> np.ndarray:
        n, group = pool_size(artifacts), artifacts["group"]
        rng = np.random.default_rng(seed)
        members = [rng.permutation(np.flatnonzero(group == g)) for g in range(int(group.max()) + 1)]
        quota = np.zeros(len(members), dtype=np.int64)
        remaining = budget
        while remaining:  # water-filling: equal shares, capped by group size
            open_ = [g for g in range(len(members)) if quota[g] < len(members[g])]
            share = max(1, remaining // len(open_))
            for g in sorted(open_, key=lambda g: -len(members[g])):
                take = min(share, len(members[g]) - quota[g], remaining)
                quota[g] += take
                remaining -= take
                if not remaining:
                    break
        picked = np.concatenate([m[:q] for m, q in zip(members, quota)])
        return check_selection(picked, budget, n, self.name)
