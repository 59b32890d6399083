"""The ranks of a multi-process score job (selbench.harness.stages.score): processes running the same selector, rank
r on device ``rank_device``. Rank 0 starts and watches the others — as subprocesses on its own machine
(``RankProcesses``) or as Ray tasks anywhere in a cluster (``RayRanks``, under the Ray executor) — and the others
watch rank 0 (``parent_watch``). Its own module, below the fine-tune code: a score job's code fingerprint must not
move when the training code changes.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selbench.models.extract import RankError

PR_SET_PDEATHSIG = 1
# Under the Ray executor a multi-process score job's environment names the placement group its ranks run in (JSON:
# address, namespace, placement_group, cpus and gpus per rank; RayRanks) and the node its task runs on.
RAY_RANKS_ENV = "SELBENCH_RAY_RANKS"
RAY_NODE_ENV = "SELBENCH_RAY_NODE"


def libc_prctl() -> Callable[..., int] | None:
    """libc's prctl (Linux), looked up in the parent: nothing is loaded between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

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


class RayRanks:
    """Ranks 1..world−1 of a multi-process job as Ray tasks, rank r in bundle r of the placement group the Ray
    executor reserved for the job (rank 0, this process, runs in bundle 0): one rank per bundle, on whichever nodes
    Ray placed them, each seeing only the GPU its bundle holds. The ranks exchange shards through the job's work
    folder, so every node needs the store on a shared filesystem at the same path (as for any Ray job). Each task
    starts ``argv + [rank]`` as a subprocess that dies with it and logs to ``logs / rank-R.log``; the same interface
    as RankProcesses. If rank 0 dies, Ray ends the tasks of the driver it was (and their subprocesses with them)."""

    def __init__(self, argv: list[str], world: int, logs: Path, ray_ranks: dict[str, Any]):
        import ray
        from ray.util import get_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.world, self.logs, self.group = world, logs, ray_ranks["placement_group"]
        logs.mkdir(parents=True, exist_ok=True)
        self.connected = not ray.is_initialized()  # this process joins the cluster as a driver of its own
        if self.connected:
            ray.init(address=ray_ranks["address"], namespace=ray_ranks["namespace"], log_to_driver=False,
                     configure_logging=False)
        group = get_placement_group(self.group)
        passed = set(ray_ranks.get("env", []))  # executor.env: its names; the values are this process's
        env = {k: v for k, v in os.environ.items() if k not in (RAY_RANKS_ENV, RAY_NODE_ENV) and (
            k in passed or k == "PYTHONPATH" or k.startswith(("SELBENCH_", "OMP_", "MKL_")))}
        env["SELBENCH_NO_PROGRESS"] = "1"
        task = ray.remote(max_retries=0)(run_rank_task)
        self.refs = {rank: task.options(
            num_cpus=ray_ranks["cpus"], num_gpus=ray_ranks["gpus"],
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=rank),
        ).remote([*argv, str(rank)], str(self.log(rank)), env) for rank in range(1, world)}
        self.results: dict[int, dict[str, Any]] = {}

    def log(self, rank: int) -> Path:
        return self.logs / f"rank-{rank}.log"

    def _result(self, rank: int) -> dict[str, Any]:
        """The finished task's report (``rc``, ``node``, ``host``, ``pid``); a task Ray lost reads as rc −1."""
        import ray

        if rank not in self.results:
            try:
                self.results[rank] = ray.get(self.refs[rank])
            except Exception as e:  # the worker or its node died, the task was cancelled
                first = str(e).splitlines()[0] if str(e) else ""
                self.results[rank] = {"rc": -1, "node": "?", "host": "?", "pid": "?",
                                      "error": f"{type(e).__name__}: {first}"[:300]}
        return self.results[rank]

    def _describe(self, rank: int) -> str:
        out = self._result(rank)
        log = self.log(rank)
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else ["(no log)"]
        how = f"exited with code {out['rc']}" if "error" not in out else f"was lost: {out['error']}"
        return (f"rank {rank} of {self.world} (Ray task, pid {out['pid']} on {out['host']}) {how}; "
                f"{log} ends:\n" + "\n".join(tail))

    def dead_peer(self) -> str | None:
        import ray

        done, _ = ray.wait(list(self.refs.values()), num_returns=len(self.refs), timeout=0)
        for rank, ref in self.refs.items():
            if ref in done:
                return self._describe(rank)
        return None

    def nodes(self) -> dict[int, str]:
        """The Ray node each finished rank ran on (after ``join``)."""
        return {rank: self._result(rank)["node"] for rank in self.refs}

    def join(self) -> None:
        failed = [self._describe(rank) for rank in self.refs if self._result(rank)["rc"] != 0]
        if failed:
            raise RankError("\n".join(failed))

    def kill(self) -> None:
        import ray

        for ref in self.refs.values():
            ray.cancel(ref, force=True)

    def __enter__(self) -> "RayRanks":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        import ray

        try:
            if exc_type is None:
                self.join()
            else:
                self.kill()
        finally:
            if self.connected:
                ray.shutdown()


def child_setup(memory_limit_mb: int | None) -> Callable[[], None]:
    """A ``preexec_fn`` for a subprocess that must die with the process starting it (``PR_SET_PDEATHSIG``; exit 70
    if that one is already gone) and, with ``memory_limit_mb``, live under that address-space limit. libc's prctl
    is looked up here, in the parent: nothing is loaded between fork and exec."""
    prctl, parent = libc_prctl(), os.getpid()
    limit = memory_limit_mb * 2**20 if memory_limit_mb is not None else None

    def setup() -> None:  # runs in the child before exec
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the line above
                os._exit(70)
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return setup


def run_rank_task(argv: list[str], log: str, env: dict[str, str]) -> dict[str, Any]:
    """Runs inside a Ray worker: one rank as a subprocess that the kernel kills when this worker dies; returns its
    exit code and where it ran."""
    import ray

    # exactly the GPUs of this task's bundle (none on a cluster without GPUs: Ray leaves the variable alone then)
    full = {**os.environ, **env, "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in ray.get_gpu_ids())}
    node = ray.get_runtime_context().get_node_id()
    setup = child_setup(None)
    with open(log, "ab") as out:
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {argv[-1] if argv else ''} on {socket.gethostname()} "
                  f"(Ray node {node}) CUDA_VISIBLE_DEVICES={full.get('CUDA_VISIBLE_DEVICES', '<unset>')}\n"
                  .encode())
        out.flush()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full,
                                preexec_fn=setup)
    return {"rc": proc.wait(), "node": node, "host": socket.gethostname(), "pid": proc.pid}


def ray_ranks() -> dict[str, Any] | None:
    """The placement group this job's ranks run in, when the Ray executor reserved one (None otherwise)."""
    raw = os.environ.get(RAY_RANKS_ENV)
    return json.loads(raw) if raw else None


def parent_watch() -> Callable[[], str | None]:
    """For ranks 1..: names rank 0 once it has gone (this process was re-parented), None while it runs."""
    parent = os.getppid()

    def dead() -> str | None:
        return None if os.getppid() == parent else f"rank 0 (pid {parent}) exited"

    return dead


def rank_device(device: str | None, rank: int, world: int, *, own_device: bool = False) -> str | None:
    """The device of ``rank`` in a ``world``-process job that was given ``device`` (the spec's: None, "cpu",
    "cuda"). One process: as given. Several on GPUs: rank r uses cuda:r of the devices the job can see (the
    executor's CUDA_VISIBLE_DEVICES), which must be at least ``world`` — or, with ``own_device`` (Ray tasks, each
    given its own GPU), cuda:0; on CPU all ranks use the CPU."""
    if world == 1:
        return device
    import torch

    if device == "cpu" or (device is None and not torch.cuda.is_available()):
        return "cpu"
    if device not in (None, "cuda"):
        raise ValueError(f"device {device!r} names one device; with {world} score workers give `device: cuda` "
                         "(or none): rank r uses cuda:r")
    if own_device:
        return "cuda:0"
    seen = torch.cuda.device_count()
    if seen < world:
        raise ValueError(f"{world} score workers need {world} GPUs; this job sees {seen} "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})")
    return f"cuda:{rank}"
