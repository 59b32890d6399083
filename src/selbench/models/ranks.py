"""The ranks of a multi-process score job (selbench.harness.stages.score): plain subprocesses running the same
selector, rank r on device ``rank_device``; rank 0 watches the others (``RankProcesses``), the others watch rank 0
(``parent_watch``). Its own module, below the fine-tune code: a score job's code fingerprint must not move when the
training code changes.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from selbench.models.extract import RankError

# ---------------------------------------------------------------- ranks of a multi-process score job
# Feature extraction needs no collective communication: the ranks are plain subprocesses that exchange their
# shards as files (selbench.models.extract.FeatureEngine.run), so a rank that dies is noticed by whoever waits on
# its files (``RankProcesses.dead_peer`` in rank 0, ``parent_watch`` in the others).


class RankProcesses:
    """Ranks 1..world−1 of a multi-process job, started by rank 0 (this process) as ``argv + [rank]``.

    Each logs to ``logs / rank-R.log``, without progress bars, in this process's process group (an executor that
    kills the job's group takes them along). As a context manager: on leaving normally, every rank is waited for
    and one that failed raises RankError with its log's tail; on an exception they are killed."""

    def __init__(self, argv: list[str], world: int, logs: Path):
        self.world, self.logs = world, logs
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SELBENCH_NO_PROGRESS": "1"}
        self.procs: dict[int, subprocess.Popen] = {}
        for rank in range(1, world):
            with open(self.log(rank), "wb") as log:
                self.procs[rank] = subprocess.Popen([*argv, str(rank)], stdout=log, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, env=env)

    def log(self, rank: int) -> Path:
        return self.logs / f"rank-{rank}.log"

    def _describe(self, rank: int, rc: int) -> str:
        tail = self.log(rank).read_text(errors="replace").splitlines()[-15:]
        return (f"rank {rank} of {self.world} (pid {self.procs[rank].pid}) exited with code {rc}; "
                f"{self.log(rank)} ends:\n" + "\n".join(tail))

    def dead_peer(self) -> str | None:
        """The first rank that has exited (while rank 0 still waits on its files), None while all run."""
        for rank, proc in self.procs.items():
            rc = proc.poll()
            if rc is not None:
                return self._describe(rank, rc)
        return None

    def join(self) -> None:
        failed = [self._describe(rank, rc) for rank, proc in self.procs.items() if (rc := proc.wait()) != 0]
        if failed:
            raise RankError("\n".join(failed))

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def __enter__(self) -> "RankProcesses":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.join()
        else:
            self.kill()


def parent_watch() -> Callable[[], str | None]:
    """For ranks 1..: names rank 0 once it has gone (this process was re-parented), None while it runs."""
    parent = os.getppid()

    def dead() -> str | None:
        return None if os.getppid() == parent else f"rank 0 (pid {parent}) exited"

    return dead


def rank_device(device: str | None, rank: int, world: int) -> str | None:
    """The device of ``rank`` in a ``world``-process job that was given ``device`` (the spec's: None, "cpu",
    "cuda"). One process: as given. Several on GPUs: rank r uses cuda:r of the devices the job can see (the
    executor's CUDA_VISIBLE_DEVICES), which must be at least ``world``; on CPU all ranks use the CPU."""
    if world == 1:
        return device
    import torch

    if device == "cpu" or (device is None and not torch.cuda.is_available()):
        return "cpu"
    if device not in (None, "cuda"):
        raise ValueError(f"device {device!r} names one device; with {world} score workers give `device: cuda` "
                         "(or none): rank r uses cuda:r")
    seen = torch.cuda.device_count()
    if seen < world:
        raise ValueError(f"{world} score workers need {world} GPUs; this job sees {seen} "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})")
    return f"cuda:{rank}"
