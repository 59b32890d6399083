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
