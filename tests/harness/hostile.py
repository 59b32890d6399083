"""Selectors that misbehave on purpose, for executor tests (loaded by ``impl: tests.harness.hostile:...``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Base:
    Config: ClassVar[type[BaseModel]] = _Cfg
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config):
        self.config = config

    def select(self, artifacts, budget, seed):
        return np.arange(budget)


class CrashSelector(_Base):
    name: ClassVar[str] = "crash"

    def score(self, pool, ctx):
        raise RuntimeError("selector exploded on purpose")


class HangSelector(_Base):
    name: ClassVar[str] = "hang"

    def score(self, pool, ctx):
        time.sleep(3600)


class MemorySelector(_Base):
    name: ClassVar[str] = "memory"

    def score(self, pool, ctx):
        blocks = []
        while True:  # grows until the address-space limit stops it
            blocks.append(np.ones(2**28, dtype=np.uint8))


class SlowSelector(_Base):
    """Sleeps in score so a test can kill the run while this job is in flight."""

    name: ClassVar[str] = "slow"

    def score(self, pool, ctx):
        time.sleep(20)
        return {"n": np.array(len(pool))}


class NetworkSelector(_Base):
    """Opens a TCP connection to a port the test listens on, on the host's loopback."""

    name: ClassVar[str] = "network"

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        port: int

    def score(self, pool, ctx):
        import socket

        with socket.create_connection(("127.0.0.1", self.config.port), timeout=5) as s:
            s.sendall(b"leak")
        return {"n": np.array(len(pool))}


class WrongCountSelector(_Base):
    name: ClassVar[str] = "wrong-count"

    def score(self, pool, ctx):
        return {"n": np.array(len(pool))}

    def select(self, artifacts, budget, seed):
        return np.arange(budget - 1)


class DuplicateSelector(WrongCountSelector):
    name: ClassVar[str] = "duplicates"

    def select(self, artifacts, budget, seed):
        return np.zeros(budget, dtype=np.int64)


class OutOfRangeSelector(WrongCountSelector):
    name: ClassVar[str] = "out-of-range"

    def select(self, artifacts, budget, seed):
        return np.arange(budget) + int(artifacts["n"])


class WriteOutsideSelector(WrongCountSelector):
    """Tries to plant a file in the store, outside its own output folder."""

    name: ClassVar[str] = "write-outside"

    def score(self, pool, ctx):
        (ctx.work_dir.parent.parent / "planted.txt").write_text("should not be here")
        return {"n": np.array(len(pool))}


class NondeterministicSelector(WrongCountSelector):
    """Ignores the seed: two runs with the same seed pick different samples."""

    name: ClassVar[str] = "nondeterministic"

    def score(self, pool, ctx):
        import os

        return {"n": np.array(len(pool)), "noise": np.frombuffer(os.urandom(8 * len(pool)), dtype=np.uint64)}

    def select(self, artifacts, budget, seed):
        return np.argsort(artifacts["noise"])[:budget]


def _store_of(ctx) -> Path:
    return ctx.work_dir.parent.parent.parent  # STORE/jobs/<staging>/work


class ReadOutsideSelector(WrongCountSelector):
    """Lists every file it can see in the store outside its own output folder (other results, logs, timings)."""

    name: ClassVar[str] = "read-outside"

    def score(self, pool, ctx):
        from collections import Counter

        store, own = _store_of(ctx), ctx.work_dir.parent
        seen = Counter("/".join(p.relative_to(store).parts[:2]) for p in store.rglob("*")
                       if p.is_file() and own not in p.parents)
        raise RuntimeError("visible outside my output: " + ", ".join(f"{g} ({n})" for g, n in sorted(seen.items())))


class RewriteResultsSelector(WrongCountSelector):
    """Rewrites every stored result and timing it can find (the full-data reference's included)."""

    name: ClassVar[str] = "rewrite-results"

    def score(self, pool, ctx):
        store = _store_of(ctx)
        targets = [*store.glob("jobs/*/results.json"), *store.glob("timings/*.json"), *store.glob("jobs/*/meta.json")]
        if not targets:
            raise RuntimeError("found no stored results to rewrite")
        for t in targets:
            t.write_text('{"forged": true}')
        return {"n": np.array(len(pool))}


class ForkBombSelector(WrongCountSelector):
    """Starts processes that never end until it cannot start more (spawned ``sleep``s: a fork of this process,
    torch loaded, would be slow enough to hit the stage timeout first)."""

    name: ClassVar[str] = "fork-bomb"

    def score(self, pool, ctx):
        import subprocess

        children = []
        try:
            while True:
                children.append(subprocess.Popen(["sleep", "3600"]))
        except OSError as e:
            raise RuntimeError(f"fork bomb stopped after {len(children)} processes: {e}") from None


class DisableCheckSelector(WrongCountSelector):
    """Replaces the in-process selection check (it runs in the selector's own process) before returning too few."""

    name: ClassVar[str] = "disable-check"

    def __init__(self, config):
        super().__init__(config)
        import selbench.selectors.scoring as scoring

        scoring.check_selection = lambda indices, *args: np.asarray(indices)


class WrongIdsSelector(WrongCountSelector):
    """A valid selection whose uid list (selection.txt, what fine-tuning reads) names other samples."""

    name: ClassVar[str] = "wrong-ids"

    def __init__(self, config):
        super().__init__(config)
        import selbench.harness.stages.select as stage

        original = stage.write_selection

        def forged(out, pool, indices, sidecar):
            original(out, pool, indices, sidecar)
            others = pool.frame["uid"].to_numpy()[np.setdiff1d(np.arange(len(pool)), indices)[: len(indices)]]
            out.write_text("".join(f"{u}\n" for u in others))

        stage.write_selection = forged

    def select(self, artifacts, budget, seed):
        return np.arange(budget)


class ForgeTimingsSelector(WrongCountSelector):
    """Works for 3 s, then reports that it took a millisecond (it writes its own meta.json's timings)."""

    name: ClassVar[str] = "forge-timings"

    def score(self, pool, ctx):
        import selbench.harness.store as store

        time.sleep(3)
        finish = store.Store.finish

        def forged(self, job, tmp, meta):
            finish(self, job, tmp, {**meta, "timings": {**meta["timings"], "wall_s": 0.001, "gpu_s": 0.0}})

        store.Store.finish = forged
        return {"n": np.array(len(pool))}
