"""A selector that gets worse on purpose, for the nightly regression test (``impl: tests.reports.worse:...``).

It takes the yes/no rows first (then the rest in pool order), so the fine-tuned model answers "yes"/"no" to
every question: the open-ended, multiple-choice, counting and OCR benchmarks collapse while POPE holds."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from selbench.selectors.base import check_selection, pool_size


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class YesNoFirstSelector:
    name: ClassVar[str] = "yesno_first"
    Config: ClassVar[type[BaseModel]] = _Cfg
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: _Cfg):
        self.config = config

    def score(self, pool, ctx):
        yes_no = [pool.turns(i)[-1][1].strip().lower().rstrip(".") in ("yes", "no") for i in range(len(pool))]
        return {"n": np.array(len(pool)), "yes_no": np.array(yes_no)}

    def select(self, artifacts, budget: int, seed: int) -> np.ndarray:
        order = np.argsort(~artifacts["yes_no"], kind="stable")
        return check_selection(order[:budget], budget, pool_size(artifacts), self.name)
