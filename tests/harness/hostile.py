"""Selectors that misbehave on purpose, for executor tests (loaded by ``impl: tests.harness.hostile:...``)."""

from __future__ import annotations

import time
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
