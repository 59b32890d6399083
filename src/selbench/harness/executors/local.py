"""Local executor: one subprocess per job, dependency order, up to ``max_parallel`` at once, GPUs handed out
through CUDA_VISIBLE_DEVICES, per-stage timeouts, optional address-space limit, logs captured per job.
A failed, hung or OOM-killed job ends its cell with a reason; everything not downstream of it goes on."""

from __future__ import annotations

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
from typing import Protocol

from selbench.harness.contracts import FAILED, SUCCEEDED, Outcome
from selbench.harness.spec import ExecutorSpec
from selbench.harness.store import Job, Store

GPU_STAGES = ("score", "finetune", "evaluate")  # prepare and select are CPU work: they take no device


def failure_reason(rc: int, log: Path, timed_out: float | None) -> str:
    if timed_out is not None:
        return f"timed out after {timed_out:.0f}s (killed)"
    tail = log.read_text(errors="replace").splitlines()[-40:] if log.exists() else []
    if any("MemoryError" in line or "OutOfMemoryError" in line for line in tail):
        return "out of memory (MemoryError)"
    if rc in (-signal.SIGKILL, 137):
        return "killed by SIGKILL (out of memory?)"
    if rc < 0:
        return f"killed by signal {-rc}"
    errors = [line.strip() for line in tail if "Error" in line or "error:" in line]
    return f"exit code {rc}: {errors[-1] if errors else (tail[-1].strip() if tail else 'no output')}"[:500]


def job_env(threads: int | None, cuda_visible_devices: str | None, extra: dict[str, str] | None = None
            ) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    if cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    env.setdefault("SELBENCH_NO_PROGRESS", "1")
    return env


def start_job_process(store_root: Path, job_id: str, log_path: Path, env: dict[str, str],
                      memory_limit_mb: int | None) -> subprocess.Popen:
    """The job entrypoint every executor runs: ``python -m selbench.harness.job STORE JOB`` in its own session
    (so a timeout can kill the whole process group), output appended to the job's log."""
    limit_bytes = memory_limit_mb * 2**20 if memory_limit_mb is not None else -1

    def limit() -> None:  # runs in the child before exec
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    log = open(log_path, "ab")
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {job_id} on {socket.gethostname()} "
              f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '<unset>')}\n".encode())
    log.flush()
    try:
        return subprocess.Popen([sys.executable, "-m", "selbench.harness.job", str(store_root), job_id],
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=limit if memory_limit_mb is not None else None,
                                start_new_session=True)
    finally:
        log.close()  # the child holds its own descriptor


class JobHandle(Protocol):
    """A running job as the scheduler sees it, whatever runs it (process, Ray task, container)."""

    grace: float  # seconds past the stage timeout before the scheduler kills it (a remote one enforces its own)
    timed_out: float | None
    error: str | None

    def poll(self) -> int | None: ...

    def kill(self) -> None: ...


class ProcessHandle:
    """A running job as the scheduler sees it: ``poll()`` (exit code or None), ``kill()``; the scheduler
    enforces the timeout itself (``grace`` 0)."""

    grace = 0.0

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.timed_out: float | None = None
        self.error: str | None = None

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


class LocalExecutor:
    def __init__(self, spec: ExecutorSpec, store: Store):
        self.spec, self.store = spec, store

    def devices_needed(self, job: Job) -> int:
        """GPUs a job takes: none for CPU stages, ``finetune_processes`` for a fine-tune, one otherwise."""
        if job.stage not in GPU_STAGES:
            return 0
        return self.spec.finetune_processes if job.stage == "finetune" else 1

    def _launch(self, job: Job, gpus: tuple[int, ...]) -> JobHandle:
        log = self.store.log_path(job.id)
        env = job_env(self.spec.threads_per_job, ",".join(map(str, gpus)), self.spec.env)
        return ProcessHandle(start_job_process(self.store.root, job.id, log, env, self.spec.memory_limit_mb))

    def run(self, jobs: list[Job], on_event: Callable[[Job, Outcome | None], None] = lambda j, o: None
            ) -> dict[str, Outcome]:
        by_id = {j.id: j for j in jobs}
        outcomes: dict[str, Outcome] = {}
        for j in jobs:
            self.store.write_job(j)
            if self.store.done(j.id):
                outcomes[j.id] = Outcome("cached")
                on_event(j, outcomes[j.id])
        running: dict[str, tuple[JobHandle, float, tuple[int, ...]]] = {}
        free_gpus = list(self.spec.gpus)
        pending = [j.id for j in jobs if j.id not in outcomes]
        while pending or running:
            # reap
            for jid, (handle, t0, held) in list(running.items()):
                limit = self.spec.timeout_s.get(by_id[jid].stage)
                timed_out = None
                if handle.poll() is None:
                    if limit is not None and time.monotonic() - t0 > limit + handle.grace:
                        handle.kill()
                        timed_out = limit
                    else:
                        continue
                rc = handle.poll()
                timed_out = timed_out or handle.timed_out
                del running[jid]
                free_gpus.extend(held)
                secs = time.monotonic() - t0
                if rc == 0 and timed_out is None and self.store.done(jid):
                    outcomes[jid] = Outcome("done", seconds=secs)
                else:
                    reason = handle.error or failure_reason(rc if rc is not None else -9,
                                                            self.store.log_path(jid), timed_out)
                    outcomes[jid] = Outcome("failed", reason, secs)
                    self._record_failure(jid, reason)
                on_event(by_id[jid], outcomes[jid])
            # launch
            for jid in list(pending):
                deps = by_id[jid].deps.values()
                bad = next((d for d in deps if d in outcomes and outcomes[d].status in FAILED), None)
                if bad is not None:
                    outcomes[jid] = Outcome("blocked", f"upstream {bad} {outcomes[bad].status}")
                    pending.remove(jid)
                    on_event(by_id[jid], outcomes[jid])
                    continue
                if not all(d in outcomes and outcomes[d].status in SUCCEEDED for d in deps):
                    continue
                if len(running) >= self.spec.max_parallel:
                    break
                gpus: tuple[int, ...] = ()
                if self.spec.gpus and (need := self.devices_needed(by_id[jid])):
                    if len(free_gpus) < need:
                        continue  # wait for enough devices
                    gpus, free_gpus = tuple(free_gpus[:need]), free_gpus[need:]
                pending.remove(jid)
                self._clear_failure(jid)
                running[jid] = (self._launch(by_id[jid], gpus), time.monotonic(), gpus)
                on_event(by_id[jid], None)
            time.sleep(0.05)
        return outcomes

    def _record_failure(self, jid: str, reason: str) -> None:
        p = self.store.failure_path(jid)
        p.parent.mkdir(exist_ok=True)
        p.write_text(json.dumps({"reason": reason, "at": time.time()}))

    def _clear_failure(self, jid: str) -> None:
        self.store.failure_path(jid).unlink(missing_ok=True)
