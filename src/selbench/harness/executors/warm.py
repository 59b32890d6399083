"""A warm worker for the local executor: one process per run that imports what jobs import (torch, transformers,
lmms-eval, the stages) once, then forks a child per job. Each child is still its own process — own session, own log,
the job's environment — and runs the same entrypoint as a cold job (``selbench.harness.job.execute``); only the
interpreter start-up and the imports (≈ 2.5 s for a select job, ≈ 8 s for an lmms-eval evaluation on 2 cores) are
paid once instead of per job. The embedded demo runs a few hundred short jobs, where those seconds were most of the
wall time.

Used only where forking is equivalent to a fresh interpreter: CPU runs (no ``gpus``: CUDA cannot be initialised
before a fork, and GPU jobs are long enough not to care) without ``memory_limit_mb`` (an address-space limit must
apply from the start of a process). ``executor.warm_workers: false`` turns it off.

Protocol (JSON lines): the runner writes ``{"req": n, "job": id, "store": path, "log": path, "env": {...}}`` to the
worker's stdin; the worker answers ``{"req": n, "pid": pid}`` after the fork and ``{"exit": pid, "rc": code}`` when
the child ends (``rc`` as ``Popen.returncode``: negative for a signal). At EOF on stdin (the runner finished or
died) the worker exits, and its children die with it (``PR_SET_PDEATHSIG``), as cold jobs die with the runner.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from selbench.harness.executors.handle import HandleState

# What a job imports before it does any work; each import that fails is skipped (its jobs import it themselves).
PRELOAD = ("torch", "transformers", "selbench.harness.job", "selbench.harness.executors.local",
           "selbench.harness.stages.prepare",
           "selbench.harness.stages.score", "selbench.harness.stages.select", "selbench.harness.stages.finetune",
           "selbench.harness.stages.evaluate", "selbench.models.training", "selbench.evaluators.lmms",
           "selbench.evaluators.lmms_model", "selbench.evaluators.embedded", "lmms_eval.evaluator",
           "lmms_eval.tasks")
PRELOAD_ATTRS = (("transformers", "LlavaForConditionalGeneration"), ("transformers", "AutoProcessor"),
                 ("transformers", "AutoTokenizer"), ("transformers", "CLIPImageProcessor"))
READY = "ready"
PR_SET_NAME = 15


# ------------------------------------------------------------------------------------------------ the worker side

def _preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 — an optional backend; its jobs report the error themselves
            pass
    for module, attr in PRELOAD_ATTRS:  # transformers' lazy classes are imported on first access
        try:
            getattr(importlib.import_module(module), attr)
        except Exception:  # noqa: BLE001
            pass
    # A fork copies only the calling thread: a Python thread holding a lock would leave it locked in every child.
    # (The imports also start native threads — torch's, pyarrow's jemalloc background thread — as in any process
    # that forks DataLoader workers after importing torch; those libraries register their own fork handlers.)
    extra = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if extra:
        raise RuntimeError(f"warm worker: threads started by the imports ({', '.join(extra)}); forking is unsafe")


def _child(request: dict, proto: int, worker: int) -> None:
    """In the forked child: become the job's process, run it, exit with its code (never returns)."""
    rc = 1
    try:
        os.close(proto)
        os.setsid()  # its own session: a timeout kills the job's whole process group
        from selbench.models.ranks import PR_SET_PDEATHSIG, libc_prctl

        prctl = libc_prctl()
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the worker, which dies with the runner
            if os.getppid() != worker:  # the worker died before the line above
                os._exit(70)
            prctl(PR_SET_NAME, b"selbench-job", 0, 0, 0)  # what ps and top show (its cmdline stays the worker's)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.environ.clear()
        os.environ.update(request["env"])
        threads = request["env"].get("OMP_NUM_THREADS")
        if threads and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))  # OpenMP read the variable at import
        sys.argv = ["selbench.harness.job", request["store"], request["job"]]
        from selbench.harness.job import execute

        rc = execute(request["store"], request["job"])
    except SystemExit as e:  # as the interpreter treats it: None → 0, an int → itself, anything else printed → 1
        if e.code is None or isinstance(e.code, int):
            rc = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            rc = 1
    except BaseException:  # noqa: BLE001 — a failed job: its traceback goes to its log, as in a cold process
        traceback.print_exc()
        rc = 1
    finally:
        try:  # what a fresh interpreter does at exit: join non-daemon threads, run the atexit handlers
            threading._shutdown()  # type: ignore[attr-defined]
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)


def serve() -> None:
    """The worker's main loop (``python -m selbench.harness.executors.warm``)."""
    proto = os.dup(1)  # replies go to the original stdout; fd 1 itself becomes the worker's log (its stderr)
    os.dup2(2, 1)
    _preload()

    def send(msg: dict) -> None:
        os.write(proto, (json.dumps(msg) + "\n").encode())

    send({"ready": READY, "pid": os.getpid()})
    buf = b""
    while True:
        while True:  # reap every child that ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            send({"exit": pid, "rc": os.waitstatus_to_exitcode(status)})
        ready, _, _ = select.select([0], [], [], 0.05)
        if not ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:  # the runner closed the pipe (finished or died): children die with this process
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            request = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            worker = os.getpid()
            pid = os.fork()
            if pid == 0:
                _child(request, proto, worker)
            send({"req": request["req"], "pid": pid})


# ------------------------------------------------------------------------------------------------ the runner side

class WarmWorker:
    """The runner's end: ``start(job_id, log, env)`` → a handle the scheduler polls like a process."""

    def __init__(self, store_root: Path, env: dict[str, str], log_path: Path, ready_timeout: float = 300.0):
        from selbench.models.ranks import PR_SET_PDEATHSIG, libc_prctl

        self.store_root = store_root
        prctl, parent = libc_prctl(), os.getpid()

        def setup() -> None:
            if prctl is not None:
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                if os.getppid() != parent:
                    os._exit(70)

        log = open(log_path, "ab")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "selbench.harness.executors.warm"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                                         preexec_fn=setup, start_new_session=True)
        finally:
            log.close()
        self._replies: queue.Queue[dict] = queue.Queue()
        self._exits: dict[int, int] = {}
        self._lock = threading.Lock()
        self._req = 0
        self._reader = threading.Thread(target=self._read, name="warm-worker-reader", daemon=True)
        self._reader.start()
        self._ready = False
        self.ready_timeout, self.log_path = ready_timeout, log_path

    def _wait_ready(self) -> None:
        """The first job waits for the imports (what a cold job would spend on its own)."""
        if self._ready:
            return
        try:
            first = self._replies.get(timeout=self.ready_timeout)
        except queue.Empty:
            self.close()
            raise RuntimeError(f"the warm worker did not start within {self.ready_timeout:.0f}s "
                               f"(log: {self.log_path})") from None
        if first.get("ready") != READY:
            self.close()
            raise RuntimeError(f"the warm worker did not start (log: {self.log_path}): {first}")
        self._ready = True

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            if "exit" in msg:
                with self._lock:
                    self._exits[int(msg["exit"])] = int(msg["rc"])
            else:
                self._replies.put(msg)
        self._replies.put({"gone": True})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def start(self, job_id: str, log_path: Path, env: dict[str, str], tags: dict[str, str]) -> WarmHandle:
        assert self.proc.stdin is not None
        self._wait_ready()
        self._req += 1
        request = {"req": self._req, "job": job_id, "store": str(self.store_root), "log": str(log_path), "env": env}
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        try:
            reply = self._replies.get(timeout=60)
        except queue.Empty:
            raise RuntimeError(f"the warm worker did not answer for job {job_id} (log: {self.log_path})") from None
        if reply.get("req") != self._req:
            raise RuntimeError(f"the warm worker did not start job {job_id}: {reply}")
        return WarmHandle(self, int(reply["pid"]), tags)

    def exit_code(self, pid: int) -> int | None:
        """The job's exit code once it ended (taken: the pid may be reused by a later job), else None."""
        with self._lock:
            if pid in self._exits:
                return self._exits.pop(pid)
        if self.alive():
            return None
        self._reader.join(timeout=2)  # the worker died: read what it reported before that
        with self._lock:
            if pid in self._exits:
                return self._exits.pop(pid)
        return -signal.SIGKILL  # its children died with it

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)  # it reads to EOF, which the worker's exit gives
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class WarmHandle(HandleState):
    """A job forked by the warm worker, as the scheduler sees it (the JobHandle protocol of the local executor)."""

    def __init__(self, worker: WarmWorker, pid: int, tags: dict[str, str]):
        super().__init__()
        self.worker, self.pid, self.tags = worker, pid, tags

    def poll(self) -> int | None:
        if self.rc is None:
            self.rc = self.worker.exit_code(self.pid)
            if self.rc is not None and not self.worker.alive() and self.error is None and self.rc == -signal.SIGKILL:
                self.error = f"the warm worker died, and this job with it (log: {self.worker.log_path})"
        return self.rc

    def kill(self) -> None:
        from selbench.harness.executors.local import kill_tagged

        if self.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # the job's session (it called setsid): it and its children
            except ProcessLookupError:  # not yet its own session leader: the process itself
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        kill_tagged(self.tags)  # descendants in sessions of their own (training ranks, a vLLM server)


if __name__ == "__main__":
    serve()
