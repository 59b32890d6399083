"""Local executor: one subprocess per job, dependency order, up to ``max_parallel`` at once, GPUs handed out
through CUDA_VISIBLE_DEVICES, per-stage timeouts, optional address-space limit, logs captured per job.
A failed, hung or OOM-killed job ends its cell with a reason; everything not downstream of it goes on.

The scheduler here (``LocalExecutor.run``) is every executor's: the Docker and Ray executors only start jobs
differently. It is the authority on the store (docs/containers.md, "Trust"):
- a job is started with a staging folder the executor owns (``SELBENCH_STAGING``); when the job exits 0 the
  executor checks and seals its outputs (hashes, its own wall-clock measurement) and only then publishes them;
- a stored job is reused only if it verifies against its seal; otherwise it is moved aside and re-run;
- a job is run or checked under its job lock, so runners sharing a store never run the same job twice;
- the jobs die with the runner: ``PR_SET_PDEATHSIG`` on every job process and a watchdog process that, once the
  runner is gone (however it ended), kills every process tagged with the runner's token (training ranks and vLLM
  servers included: they inherit the tag) and removes its containers. A new run first reclaims what a killed run
  left: staging folders of dead owners and job processes of dead runners.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from selbench.harness.contracts import FAILED, SUCCEEDED, Outcome
from selbench.harness.executors.handle import HandleState
from selbench.harness.executors.warm import WarmWorker
from selbench.harness.spec import ExecutorSpec
from selbench.harness.store import Job, Lock, Store
from selbench.models.ranks import child_setup

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


# ---- who started a job: the runner token every job process carries (and its descendants inherit)

def runner_token() -> str:
    """``host:pid:start:nonce`` of this runner (one per executor run)."""
    import psutil

    return f"{socket.gethostname()}:{os.getpid()}:{int(psutil.Process().create_time())}:{uuid.uuid4().hex[:8]}"


def runner_alive(token: str) -> bool | None:
    """Whether the runner that issued ``token`` is alive; None when it ran on another host (cannot tell)."""
    import psutil

    try:
        host, pid, started, _ = token.rsplit(":", 3)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        return abs(int(psutil.Process(int(pid)).create_time()) - int(started)) <= 1
    except (psutil.Error, ValueError):
        return False


def tagged(match: dict[str, str]) -> list[tuple[Any, dict[str, str]]]:
    """(process, environment) of every process of this user whose environment has all of ``match``."""
    import psutil

    found = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        try:
            env = p.environ()
        except (psutil.Error, OSError):
            continue
        if all(env.get(k) == v for k, v in match.items()):
            found.append((p, env))
    return found


def kill_processes(procs: list[Any]) -> None:
    import psutil

    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=3)


def kill_tagged(match: dict[str, str]) -> int:
    """SIGKILL every process tagged with ``match`` (a few rounds: a dying parent may still fork)."""
    killed = 0
    for _ in range(5):
        procs = [p for p, _ in tagged(match)]
        if not procs:
            break
        kill_processes(procs)
        killed += len(procs)
    return killed


# The watchdog: its own session (so a kill of the runner's process group spares it), stdlib + psutil only (fast to
# start). It blocks on a pipe from the runner; at EOF — the runner closed it or died, even by SIGKILL — it kills
# every process carrying the runner's token and removes the runner's containers.
WATCHDOG = r"""
import os, sys
token, docker_host = sys.argv[1], sys.argv[2]
try:
    sys.stdin.buffer.read()
except BaseException:
    pass
import psutil
for _ in range(5):
    procs = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get("SELBENCH_RUNNER") == token:
                procs.append(p)
        except (psutil.Error, OSError):
            pass
    if not procs:
        break
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=3)
if docker_host != "-":
    try:
        import docker
        client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
        for c in client.containers.list(all=True, filters={"label": "selbench.runner=" + token}):
            c.remove(force=True)
    except Exception:
        pass
"""


def start_watchdog(token: str, docker_host: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELBENCH_")}
    return subprocess.Popen([sys.executable, "-c", WATCHDOG, token, "-" if docker_host is None else docker_host],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)


def start_job_process(store_root: Path, job_id: str, log_path: Path, env: dict[str, str],
                      memory_limit_mb: int | None) -> subprocess.Popen:
    """The job entrypoint every executor runs: ``python -m selbench.harness.job STORE JOB`` in its own session
    (so a timeout can kill the whole process group), output appended to the job's log. The kernel kills it when
    the process that started it dies (``PR_SET_PDEATHSIG``)."""
    setup = child_setup(memory_limit_mb)
    _log_header(log_path, job_id, env)
    log = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "selbench.harness.job", str(store_root), job_id],
                                stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=setup,
                                start_new_session=True)
    finally:
        log.close()  # the child holds its own descriptor


def _log_header(log_path: Path, job_id: str, env: dict[str, str]) -> None:
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {job_id} on {socket.gethostname()} "
                  f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '<unset>')}\n".encode())


class JobHandle(Protocol):
    """A running job as the scheduler sees it, whatever runs it (process, Ray task, container)."""

    grace: float  # seconds past the stage timeout before the scheduler kills it (a remote one enforces its own)
    timed_out: float | None
    error: str | None
    seconds: float | None  # wall seconds measured where the job ran (None: the scheduler's own measurement)
    n_gpus: int | None  # devices the job was given (None: the scheduler's count)

    def poll(self) -> int | None: ...

    def kill(self) -> None: ...


class ProcessHandle(HandleState):
    """A running job as the scheduler sees it: ``poll()`` (exit code or None), ``kill()``; the scheduler
    enforces the timeout itself (``grace`` 0). ``kill`` takes the process group and every process tagged with
    the job (``tags``: its descendants in sessions of their own, such as training ranks or a vLLM server)."""

    def __init__(self, proc: subprocess.Popen, tags: dict[str, str] | None = None):
        super().__init__()
        self.proc, self.tags = proc, tags

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        if self.tags:
            kill_tagged(self.tags)


@dataclass
class Running:
    job: Job
    handle: JobHandle
    t0: float  # monotonic
    started: float  # epoch
    gpus: tuple[int, ...]
    lock: Lock
    staging: Path


def _stderr(message: str) -> None:
    print(f"[selbench] {message}", file=sys.stderr, flush=True)


def score_ranks(job: Job) -> int:
    """The processes a job runs as when it is a score job that splits its extraction (``workers``, set by the plan
    only when > 1); 1 for every other job."""
    return int(job.config.get("workers", 1)) if job.stage == "score" else 1


class LocalExecutor:
    token = ""  # this run's runner token (set by run)
    on_message: Callable[[str], None] = staticmethod(_stderr)
    watchdog_docker_host: str | None = None  # the Docker executor: the daemon the watchdog removes containers from

    def __init__(self, spec: ExecutorSpec, store: Store):
        self.spec, self.store = spec, store
        self._warm: WarmWorker | None = None
        self._warm_failed = False

    def devices_needed(self, job: Job) -> int:
        """GPUs a job takes: none for CPU stages, ``finetune_processes`` for a fine-tune, its ``workers`` for a score
        job (``score_workers`` for a selector that splits its extraction), one otherwise."""
        if job.stage not in GPU_STAGES:
            return 0
        if job.stage == "score":
            return score_ranks(job)
        return self.spec.finetune_processes if job.stage == "finetune" else 1

    def job_tags(self, job: Job, staging: Path) -> dict[str, str]:
        """What every job process gets in its environment: its staging folder and the tags that identify it."""
        return {"SELBENCH_RUNNER": self.token, "SELBENCH_STORE": str(self.store.root.resolve()),
                "SELBENCH_JOB": job.id, "SELBENCH_STAGING": str(staging.resolve())}

    def _launch(self, job: Job, gpus: tuple[int, ...], staging: Path) -> JobHandle:
        log = self.store.log_path(job.id)
        tags = self.job_tags(job, staging)
        env = job_env(self.spec.threads_per_job, ",".join(map(str, gpus)), {**self.spec.job_env(), **tags})
        kill_tags = {k: tags[k] for k in ("SELBENCH_RUNNER", "SELBENCH_JOB")}
        warm = self._warm_worker()
        if warm is not None:
            _log_header(log, job.id, env)
            try:
                return warm.start(job.id, log, env, kill_tags)
            except (OSError, RuntimeError, ValueError) as e:  # could not start or died: this run goes on cold
                self._give_up_warm(str(e))
        proc = start_job_process(self.store.root, job.id, log, env, self.spec.memory_limit_mb)
        return ProcessHandle(proc, kill_tags)

    def _warm_worker(self) -> WarmWorker | None:
        """This run's warm worker (started on first use), or None where jobs start cold: turned off, GPUs (no fork
        after CUDA), an address-space limit (must hold from exec), a subclass that launches otherwise, or a worker
        that could not start or died (said once; the run goes on cold)."""
        s = self.spec
        if not s.warm_workers or s.gpus or s.memory_limit_mb is not None or type(self) is not LocalExecutor:
            return None
        if self._warm_failed:
            return None
        if self._warm is not None:
            if self._warm.alive():
                return self._warm
            self._give_up_warm(f"it exited (log: {self._warm.log_path})")
            return None
        tags = {"SELBENCH_RUNNER": self.token, "SELBENCH_STORE": str(self.store.root.resolve())}
        try:
            self._warm = WarmWorker(self.store.root, job_env(s.threads_per_job, "", {**s.job_env(), **tags}),
                                    self.store.log_path("warm-worker"))
        except (OSError, RuntimeError) as e:
            self._give_up_warm(str(e))
        return self._warm

    def _give_up_warm(self, why: str) -> None:
        """Close the warm worker (its children die with it: none is left running beside a cold retry of its job)
        and start every later job cold; said once."""
        if self._warm is not None:
            self._warm.close()
        self._warm, self._warm_failed = None, True
        self.on_message(f"warm worker unavailable ({why}); starting every job in a fresh interpreter")

    def cleanup(self) -> None:
        """What a killed run left: staging folders whose owner is dead, job processes whose runner is dead."""
        gone = self.store.reclaim_staging()
        orphans = [p for p, env in tagged({"SELBENCH_STORE": str(self.store.root.resolve())})
                   if runner_alive(env.get("SELBENCH_RUNNER", "")) is False]
        kill_processes(orphans)
        if gone or orphans:
            self.on_message(f"cleaned up after a killed run: {len(gone)} staging folder(s) of dead owners removed, "
                            f"{len(orphans)} orphaned job process(es) killed")

    def run(self, jobs: list[Job], on_event: Callable[[Job, Outcome | None], None] = lambda j, o: None
            ) -> dict[str, Outcome]:
        self.token = runner_token()
        watchdog = start_watchdog(self.token, self.watchdog_docker_host)
        running: dict[str, Running] = {}
        try:
            self.cleanup()
            return self._schedule(jobs, on_event, running)
        finally:
            for r in running.values():  # only on an exception (Ctrl-C): the jobs die with the run
                r.handle.kill()
                self.store.abandon(r.staging)
                r.lock.release()
            if self._warm is not None:
                self._warm.close()
                self._warm = None
            assert watchdog.stdin is not None
            watchdog.stdin.close()  # the watchdog sweeps (nothing is left on a clean finish) and exits
            try:
                watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def _schedule(self, jobs: list[Job], on_event: Callable[[Job, Outcome | None], None],
                  running: dict[str, Running]) -> dict[str, Outcome]:
        by_id = {j.id: j for j in jobs}
        for j in jobs:
            self.store.write_job(j)
        outcomes: dict[str, Outcome] = {}
        free_gpus = list(self.spec.gpus)
        pending = [j.id for j in jobs]
        waiting: set[str] = set()  # jobs another runner holds: said once
        redo: dict[str, str] = {}  # jobs re-run because their stored outputs failed verification → why

        def finish(jid: str, outcome: Outcome) -> None:
            outcomes[jid] = outcome
            on_event(by_id[jid], outcome)

        while pending or running:
            # reap
            for jid, r in list(running.items()):
                limit = self.spec.timeout_s.get(r.job.stage)
                timed_out = None
                if r.handle.poll() is None:
                    if limit is not None and time.monotonic() - r.t0 > limit + r.handle.grace:
                        r.handle.kill()
                        timed_out = limit
                    else:
                        continue
                del running[jid]
                free_gpus.extend(r.gpus)
                try:
                    finish(jid, self._ended(r, r.handle.poll(), timed_out or r.handle.timed_out, redo.get(jid)))
                finally:
                    r.lock.release()
            # launch (or reuse)
            for jid in list(pending):
                job = by_id[jid]
                deps = job.deps.values()
                bad = next((d for d in deps if d in outcomes and outcomes[d].status in FAILED), None)
                if bad is not None:
                    pending.remove(jid)
                    finish(jid, Outcome("blocked", f"upstream {bad} {outcomes[bad].status}"))
                    continue
                if not all(d in outcomes and outcomes[d].status in SUCCEEDED for d in deps):
                    continue
                need = self.devices_needed(job) if self.spec.gpus else 0
                can_start = len(running) < self.spec.max_parallel and len(free_gpus) >= need
                if not can_start and not self.store.done(jid):
                    continue
                lock = self.store.try_lock("jobs", jid, f"{self.spec.kind} executor, job {jid}")
                if lock is None:  # another runner is running or checking it: reuse its result when it is done
                    if jid not in waiting:
                        waiting.add(jid)
                        self.on_message(f"{jid} is being run by {self.store.job_busy(jid) or 'another runner'}: "
                                        "waiting for it")
                    continue
                if self.store.done(jid):
                    problem = self.store.verify(job)
                    if problem is None:
                        lock.release()
                        pending.remove(jid)
                        finish(jid, Outcome("cached"))
                        continue
                    moved = self.store.quarantine(jid, problem)
                    redo[jid] = problem
                    self.on_message(f"{jid} is invalid: {problem}; moved to {moved.relative_to(self.store.root)}, "
                                    "re-running it")
                    if not can_start:
                        lock.release()
                        continue
                gpus: tuple[int, ...] = ()
                if need:
                    gpus, free_gpus = tuple(free_gpus[:need]), free_gpus[need:]
                pending.remove(jid)
                self._clear_failure(jid)
                staging = self.store.staging(jid)
                try:
                    handle = self._launch(job, gpus, staging)
                except Exception as e:  # the daemon refused a container, Ray is gone: this job fails, not the run
                    self.store.abandon(staging)
                    lock.release()
                    free_gpus.extend(gpus)
                    reason = f"could not start the job: {type(e).__name__}: {e}"[:500]
                    self._record_failure(jid, reason)
                    finish(jid, Outcome("failed", reason))
                    continue
                running[jid] = Running(job, handle, time.monotonic(), time.time(), gpus, lock, staging)
                on_event(job, None)
            time.sleep(0.05)
        return outcomes

    def _ended(self, r: Running, rc: int | None, timed_out: float | None, redone: str | None) -> Outcome:
        """A job process ended: seal and publish its outputs, or say why it failed."""
        jid = r.job.id
        wall = r.handle.seconds if r.handle.seconds is not None else time.monotonic() - r.t0
        if rc == 0 and timed_out is None:
            n_gpus = r.handle.n_gpus if r.handle.n_gpus is not None else len(r.gpus)
            timings = {"wall_s": wall, "gpu_s": wall * n_gpus, "n_gpus": n_gpus, "started": r.started,
                       "ended": time.time(), "host": socket.gethostname(), "executor": self.spec.kind,
                       "measured_by": "executor"}
            problem = self._commit(r, timings)
            if problem is None:
                return Outcome("done", f"redone: {redone}" if redone else None, wall)
            reason = f"outputs rejected: {problem}"
        else:
            self.store.abandon(r.staging)
            reason = r.handle.error or failure_reason(rc if rc is not None else -9, self.store.log_path(jid),
                                                      timed_out)
        self._record_failure(jid, reason)
        return Outcome("failed", reason, wall)

    def _commit(self, r: Running, timings: dict[str, Any]) -> str | None:
        jid = r.job.id
        if self.store.done(jid):  # published outside the harness's locks (a job run by hand): keep theirs
            self.store.publish(jid, r.staging)
            return self.store.verify(r.job)
        problem = self.store.seal(r.job, r.staging, timings)
        if problem is not None:
            moved = self.store.quarantine(jid, problem, folder=r.staging)
            return f"{problem} (kept as {moved.relative_to(self.store.root)})"
        self.store.publish(jid, r.staging)
        return None

    def _record_failure(self, jid: str, reason: str) -> None:
        p = self.store.failure_path(jid)
        p.parent.mkdir(exist_ok=True)
        p.write_text(json.dumps({"reason": reason, "at": time.time()}))

    def _clear_failure(self, jid: str) -> None:
        self.store.failure_path(jid).unlink(missing_ok=True)
