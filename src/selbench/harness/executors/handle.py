"""What every running job's handle carries besides ``poll()`` and ``kill()`` (the scheduler's JobHandle protocol,
selbench.harness.executors.local): one base for the process, warm-worker, container and Ray handles."""

from __future__ import annotations


class HandleState:
    grace = 0.0  # seconds past the stage timeout before the scheduler kills it (a remote one enforces its own)

    def __init__(self) -> None:
        self.rc: int | None = None  # the exit code, once known
        self.timed_out: float | None = None
        self.error: str | None = None
        self.seconds: float | None = None  # wall seconds measured where the job ran (None: the scheduler's)
        self.n_gpus: int | None = None  # devices the job was given (None: the scheduler's count)
