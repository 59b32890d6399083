"""The selector protocol: an expensive, cached ``score`` and a cheap ``select``.

A selector has a ``name``, a pydantic ``Config`` (unknown keys are errors) and:

- ``score(pool, ctx) -> Artifacts``: features, scores, clusters, trajectories (numpy arrays), computed once per
  (selector config, pool, models) and shared by every budget and seed;
- ``select(artifacts, budget, seed) -> np.ndarray``: exactly ``budget`` unique pool indices.

No base class with behaviour: selectors satisfy the Protocol; the helpers here are plain functions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel

from selbench.pool.manifest import Manifest

Artifacts = dict[str, np.ndarray]


class SelectionError(ValueError):
    """A budget a selector cannot meet, or artifacts it cannot use."""


@dataclass(frozen=True)
class Budget:
    """A fraction of the pool (0 < f ≤ 1, given as a float) or a sample count (an int ≥ 1)."""

    value: float | int

    @classmethod
    def parse(cls, v: "str | float | int | Budget") -> "Budget":
        if isinstance(v, Budget):
            return v
        if isinstance(v, str):
            s = v.strip()
            if s.endswith("%"):
                v = float(s[:-1]) / 100
            elif s.isdigit():
                v = int(s)
            else:
                try:
                    v = float(s)
                except ValueError:
                    raise SelectionError(f"budget {s!r}: expected a count (10000), a fraction (0.2) or 20%") from None
        if isinstance(v, bool):
            raise SelectionError(f"budget {v!r}: expected a number")
        if isinstance(v, float) and v.is_integer() and v > 1:
            v = int(v)
        if isinstance(v, int):
            if v < 1:
                raise SelectionError(f"budget {v}: a count must be ≥ 1")
        elif not 0 < v <= 1:
            raise SelectionError(f"budget {v}: a fraction must be in (0, 1]")
        return cls(v)

    def resolve(self, n: int) -> int:
        """Sample count for a pool of ``n``. Fractions round to the nearest count (at least 1)."""
        k = self.value if isinstance(self.value, int) else max(1, int(round(self.value * n)))
        if k > n:
            raise SelectionError(f"budget {self.label} exceeds the pool size {n}")
        return k

    @property
    def label(self) -> str:
        return str(self.value) if isinstance(self.value, int) else f"{self.value * 100:g}%"


def _nobody_dead() -> str | None:
    return None


@dataclass
class ScoringContext:
    """What ``score`` may use. Models are paths, loaded by the selector (only the ones it needs).

    A score job with several workers (selbench.harness.stages.score) runs ``score`` in that many processes at once,
    for selectors that say so (``multi_process = True``): this one is rank ``rank`` of ``world``, its feature
    extraction computes every world-th shard of ``shard_size`` examples (``FeatureEngine.run``, through
    ``_features.engine``), and only rank 0's artifacts are kept — the others may return ``{}`` once their
    extraction is done, and must not redo once-only work (XMAS's proxy training: they wait for rank 0's checkpoints).
    """

    work_dir: Path  # the score job's private folder (shards, checkpoints), shared by its ranks
    target: Path | None = None
    proxy: Path | None = None
    device: str | None = None
    batch_size: int = 32
    timings: dict[str, float] = field(default_factory=dict)  # feature_extraction / proxy_training / scoring
    notes: list[str] = field(default_factory=list)  # said in the output (e.g. rows dropped from scoring)
    rank: int = 0
    world: int = 1
    shard_size: int = 4096
    # names a process this rank waits on that has exited (None while all run): see FeatureEngine.run's barrier
    dead_peer: Callable[[], str | None] = _nobody_dead

    @contextmanager
    def timed(self, part: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[part] = self.timings.get(part, 0.0) + time.perf_counter() - t0

    def require(self, which: str) -> Path:
        path = getattr(self, which)
        if path is None:
            raise SelectionError(f"this selector needs a {which} model; the run spec names none")
        return Path(path)


@runtime_checkable
class Selector(Protocol):
    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    needs: ClassVar[frozenset[str]]  # subset of {"target", "proxy"}
    config: BaseModel

    def __init__(self, config: Any) -> None: ...  # an instance of its own ``Config``

    def score(self, pool: Manifest, ctx: ScoringContext) -> Artifacts: ...

    def select(self, artifacts: Artifacts, budget: int, seed: int) -> np.ndarray: ...


# ---------------------------------------------------------------- helpers shared by selectors

def top_k(scores: np.ndarray, k: int, *, largest: bool = True) -> np.ndarray:
    """Indices of the k largest (or smallest) scores; ties broken by lower index (stable)."""
    order = np.argsort(-scores if largest else scores, kind="stable")
    return order[:k]


ROW_BLOCK = 4096  # rows per block of the selection math's passes over the features


def row_blocks(n: int, size: int = ROW_BLOCK) -> Iterator[slice]:
    """Slices of ``size`` rows covering ``n``: selection math over features that may be memory-mapped (665K × 4096
    float16) reads a block at a time, so its memory is one block whatever N is."""
    for lo in range(0, n, size):
        yield slice(lo, min(n, lo + size))


def check_selection(indices: np.ndarray, budget: int, n: int, who: str) -> np.ndarray:
    """Enforce the contract: exactly ``budget`` unique indices in [0, n)."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise SelectionError(f"{who}: selection must be a 1-D array of integers, got {idx.dtype} {idx.shape}")
    if len(idx) != budget:
        raise SelectionError(f"{who}: returned {len(idx)} indices for a budget of {budget}")
    if len(np.unique(idx)) != len(idx):
        raise SelectionError(f"{who}: returned duplicate indices")
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise SelectionError(f"{who}: index out of range [0, {n})")
    return idx.astype(np.int64)


def save_artifacts(artifacts: Artifacts, path: Path, meta: dict[str, Any] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **artifacts)
    tmp.replace(path)
    if meta is not None:
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=str))
    return path


def load_artifacts(path: Path) -> Artifacts:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def pool_size(artifacts: Artifacts) -> int:
    if "n" not in artifacts:
        raise SelectionError("artifacts lack the pool size 'n'")
    return int(artifacts["n"])
