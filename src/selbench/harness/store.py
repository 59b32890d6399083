"""Content-addressed artifact store. A job's outputs live in ``jobs/<stage>-<key>/``; they are written into a
staging folder and renamed into place by the executor, with ``meta.json`` (lineage, resolved config, environment,
self-reported timings) — so a folder that exists is complete.

The harness, not the job, is the authority on what a stored job is (docs/containers.md, "Trust"):

- ``hashes/<job>.json`` — written by the executor *before* it publishes the folder: size, mtime and sha256 of every
  output file, the digest of the outputs (``meta.json`` left out, since it holds timings) and the digests of the
  upstream jobs' outputs the job consumed. ``verify`` checks a stored job against it whenever the job is reused or
  its outputs are collected: files under ``SMALL_FILE`` (meta.json, results.json, selections …) are re-hashed every
  time; bigger ones (checkpoints: GBs) are hashed once at completion and, on reuse, compared by size and mtime, with
  the full hash recomputed only when those changed (an edit that restores both is not caught: an accepted cost).
- ``timings/<job>.json`` — wall seconds of the job process as the executor measured them from outside the job;
  ``meta()`` reports these (the job's own numbers stay under ``timings.self_reported``).
- A job that fails verification is moved aside, never deleted: ``jobs/<job>.invalid-<UTC time>`` (its evaluation
  resume folder and its records go along, the reason to ``invalid/<job>.invalid-<time>.json``), and is re-run.
- ``locks/``: ``fcntl.flock`` locks that name their owner (pid, host): one per run name (``runs/``), one per job
  while an executor runs or checks it (``jobs/``), one per staging folder held by whoever created it
  (``staging/``). The kernel drops a lock when its process dies, so a dead owner's staging folder is reclaimed by
  the next run and a live one is never touched.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import selbench
from selbench.harness.contracts import Stage

# Bumped whenever a stage's output layout changes, so old store entries are recomputed rather than misread.
STORE_FORMAT = 2
# Outputs up to this size are re-hashed on every verification; larger ones only when their size or mtime changed.
SMALL_FILE = 16 * 2**20
META = "meta.json"


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def model_fingerprint(path: Path | None) -> str | None:
    """Identity of a model folder: config + weight files' names, sizes and mtimes (hashing GBs is slow)."""
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        return str(path)
    parts: list[object] = []
    for f in sorted(path.iterdir()):
        if f.is_file():
            st = f.stat()
            parts.append([f.name, st.st_size, int(st.st_mtime)])
            if f.name == "config.json":
                parts.append(hashlib.sha256(f.read_bytes()).hexdigest())
    return stable_hash([str(path), parts])


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(2**20):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Job:
    stage: Stage
    config: dict[str, Any]  # a StageConfig's canonical dump (selbench.harness.contracts): stages parse it back
    deps: dict[str, str] = field(default_factory=dict)  # role → upstream job id
    cell: dict[str, Any] = field(default_factory=dict)  # selector / budget / seed, for status and results
    # fingerprint of the code the job runs (selbench.harness.codeprint.job_code): its stage's source and, for score
    # and select, its selector's: changed code gets new job ids, unchanged code keeps them
    code: str = ""

    @property
    def key(self) -> str:
        return stable_hash({"stage": self.stage, "config": self.config, "deps": self.deps, "code": self.code,
                            "store_format": STORE_FORMAT})

    @property
    def id(self) -> str:
        return f"{self.stage}-{self.key}"


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                           "selbench": selbench.__version__, "host": platform.node()}
    for mod in ("torch", "transformers", "peft", "numpy"):
        m = sys.modules.get(mod)
        if m is not None:
            env[mod] = getattr(m, "__version__", "?")
    try:
        import subprocess

        env["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                       cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except Exception:
        env["commit"] = None
    return env


class Lock:
    """An exclusive ``flock`` on a lock file that records its owner. Released by ``release()`` or by the kernel
    when the owner dies, however it dies (kill -9 included): a held lock always has a live owner."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self, unlink: bool = False) -> None:
        if self.fd < 0:
            return
        if unlink:  # only for lock files whose name nobody reuses (staging owners)
            self.path.unlink(missing_ok=True)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(path: Path, *, wait: bool, what: str = "") -> Lock | None:
    """Lock ``path`` (created if missing); None when ``wait`` is False and someone holds it. The owner's pid, host,
    start time and ``what`` are written into the file for others' messages (``holder``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # the file may have been unlinked by its last holder between our open and flock: lock the new one
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "what": what}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(owner).encode(), 0)
    return Lock(path, fd)


def holder(path: Path) -> str:
    """Who holds (or last held) a lock, for messages."""
    try:
        o = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(o["since"]))
        return f"pid {o['pid']} on {o['host']} since {since}" + (f" ({o['what']})" if o.get("what") else "")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def is_locked(path: Path) -> bool:
    if not path.exists():
        return False
    lock = acquire(path, wait=False)
    if lock is None:
        return True
    lock.release()
    return False


def _safe(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
    return f"{keep}-{stable_hash(name)[:8]}"


STORE_FOLDERS = ("jobs", "logs", "specs", "hashes", "timings", "locks")  # made by every Store


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        for sub in STORE_FOLDERS:
            if not (self.root / sub).is_dir():
                try:
                    (self.root / sub).mkdir(parents=True, exist_ok=True)
                except OSError as e:  # a sandboxed selector job sees only its inputs, in a read-only store view
                    if e.errno != errno.EROFS:
                        raise
        self._owned: dict[Path, Lock] = {}  # staging folders this process created → their owner locks

    def path(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def log_path(self, job_id: str) -> Path:
        return self.root / "logs" / f"{job_id}.log"

    def failure_path(self, job_id: str) -> Path:
        """Where an executor records why a job failed (removed when the job is started again)."""
        return self.root / "failed" / f"{job_id}.json"

    def hashes_path(self, job_id: str) -> Path:
        return self.root / "hashes" / f"{job_id}.json"

    def timings_path(self, job_id: str) -> Path:
        return self.root / "timings" / f"{job_id}.json"

    def done(self, job_id: str) -> bool:
        return (self.path(job_id) / META).exists()

    def meta(self, job_id: str) -> dict[str, Any]:
        """The job's ``meta.json`` with its ``timings`` as the executor measured them (``wall_s``, ``gpu_s``,
        ``n_gpus``, ``measured_by: executor``); the job's own numbers stay under ``timings.self_reported`` and its
        ``parts`` breakdown, ``device`` and peak memory are copied from there (self-reported: labelled so)."""
        meta = json.loads((self.path(job_id) / META).read_text())
        measured = self.timings(job_id)
        if measured is not None:
            own = meta.get("timings") or {}
            meta["timings"] = {
                "wall_s": measured["wall_s"], "gpu_s": measured["gpu_s"], "n_gpus": measured["n_gpus"],
                "measured_by": "executor", "device": own.get("device"), "peak_rss_mb": own.get("peak_rss_mb"),
                "peak_gpu_mb": own.get("peak_gpu_mb"), "parts": own.get("parts", {}),
                "self_reported_keys": ["device", "peak_rss_mb", "peak_gpu_mb", "parts"], "self_reported": own}
        return meta

    def timings(self, job_id: str) -> dict[str, Any] | None:
        """The executor's measurement of a job (None for a job no executor sealed)."""
        try:
            return json.loads(self.timings_path(job_id).read_text())
        except (OSError, ValueError):
            return None

    def write_job(self, job: Job) -> Path:
        p = self.root / "specs" / f"{job.id}.json"
        if not p.exists():
            tmp = p.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(asdict(job), indent=1, default=str))
            tmp.replace(p)
        return p

    def read_job(self, job_id: str) -> Job:
        return Job(**json.loads((self.root / "specs" / f"{job_id}.json").read_text()))

    # ---- locks

    def lock_path(self, kind: str, name: str) -> Path:
        return self.root / "locks" / kind / f"{_safe(name) if kind == 'runs' else name}.lock"

    def try_lock(self, kind: str, name: str, what: str = "") -> Lock | None:
        return acquire(self.lock_path(kind, name), wait=False, what=what)

    @contextmanager
    def locked(self, kind: str, name: str, what: str = "",
               on_wait: Callable[[str], None] | None = None) -> Iterator[Lock]:
        """Hold ``locks/<kind>/<name>.lock`` for the block, waiting for its holder (``on_wait`` says who) first."""
        path = self.lock_path(kind, name)
        lock = acquire(path, wait=False, what=what)
        if lock is None:
            if on_wait is not None:
                on_wait(holder(path))
            lock = acquire(path, wait=True, what=what)
        assert lock is not None
        try:
            yield lock
        finally:
            lock.release()

    def job_busy(self, job_id: str) -> str | None:
        """Who holds a job's lock (an executor running or checking it), or None."""
        path = self.lock_path("jobs", job_id)
        return holder(path) if is_locked(path) else None

    # ---- staging

    def staging_path(self, job_id: str) -> Path:
        """This process's staging folder for a job (host and pid in the name)."""
        return self.path(job_id).with_name(f"{job_id}.tmp-{socket.gethostname()}-{os.getpid()}")

    def _owner_lock(self, tmp: Path) -> Path:
        return self.root / "locks" / "staging" / f"{tmp.name}.lock"

    def staging(self, job_id: str) -> Path:
        """A fresh staging folder for a job's outputs, owned by this process (an flock held until ``publish`` or
        ``abandon``). Staging folders of the same job whose owner died are reclaimed; a live one is left alone."""
        self.reclaim_staging(job_id)
        tmp = self.staging_path(job_id)
        lock = self._owned.pop(tmp, None) or acquire(self._owner_lock(tmp), wait=False, what=f"staging {job_id}")
        if lock is None:
            raise RuntimeError(f"staging folder {tmp} is in use by {holder(self._owner_lock(tmp))}")
        remove_tree(tmp)  # an earlier attempt of this very process
        tmp.mkdir(parents=True)
        self._owned[tmp] = lock
        return tmp

    def reclaim_staging(self, job_id: str | None = None) -> list[Path]:
        """Remove staging folders (of one job, or all) whose owner is gone; returns them."""
        gone = []
        for tmp in self.root.joinpath("jobs").glob(f"{job_id or '*'}.tmp-*"):
            if not tmp.is_dir() or tmp in self._owned:
                continue
            lock = acquire(self._owner_lock(tmp), wait=False)
            if lock is None:  # a live owner: another runner's job in flight
                continue
            remove_tree(tmp)
            lock.release(unlink=True)
            gone.append(tmp)
        return gone

    def staging_live(self, job_id: str) -> bool:
        """A staging folder of the job with a live owner exists (the job is running somewhere)."""
        return any(tmp.is_dir() and (tmp in self._owned or is_locked(self._owner_lock(tmp)))
                   for tmp in self.root.joinpath("jobs").glob(f"{job_id}.tmp-*"))

    def abandon(self, tmp: Path) -> None:
        """Give up a staging folder (a failed job): its owner lock is released, the next run reclaims it."""
        lock = self._owned.pop(tmp, None)
        if lock is not None:
            lock.release(unlink=False)

    # ---- commit

    def commit(self, job: Job, tmp: Path, meta: dict[str, Any]) -> Path:
        """Finish and publish in one go: a job run by hand (no executor seals it, so the next run redoes it)."""
        self.finish(job, tmp, meta)
        return self.publish(job.id, tmp)

    def finish(self, job: Job, tmp: Path, meta: dict[str, Any]) -> None:
        """Write ``meta.json`` into a staging folder (the last file a job writes)."""
        full = {"id": job.id, "stage": job.stage, "config": job.config, "deps": job.deps, "cell": job.cell,
                "environment": environment(), **meta}
        (tmp / META).write_text(json.dumps(full, indent=1, default=str))

    def publish(self, job_id: str, tmp: Path) -> Path:
        """Rename a finished staging folder into place (atomic)."""
        dest = self.path(job_id)
        if dest.exists():  # another worker finished the same job first: keep theirs
            remove_tree(tmp)
        else:
            tmp.rename(dest)
        lock = self._owned.pop(tmp, None)
        if lock is not None:
            lock.release(unlink=True)
        return dest

    # ---- the harness's seal: hashes and timings

    def seal(self, job: Job, tmp: Path, timings: dict[str, Any]) -> str | None:
        """Record the executor's timings and the hashes of a finished staging folder (before it is published).
        Returns a problem (unreadable meta.json / JSON output) instead of sealing bad outputs."""
        try:
            outputs = _files(tmp)
        except OutputError as e:
            return f"{tmp.name}: {e}"
        odd = _odd(outputs)
        if odd is not None:
            return f"{tmp.name}/{odd} is not a regular file (links and special files are not accepted as outputs)"
        problem = _readable(job.id, tmp, lambda rel: f"{tmp.name}/{rel}")
        if problem:
            return problem
        inputs = {}
        for dep in job.deps.values():
            digest = self.digest(dep)
            if digest is None:
                return f"upstream {dep} is not sealed"
            inputs[dep] = digest
        files = {}
        for rel, p in outputs.items():
            try:
                st = p.stat()
                files[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(p)}
            except OSError as e:
                return f"{tmp.name}/{rel} is unreadable ({type(e).__name__})"
        tpath = self.timings_path(job.id)
        _write_json(tpath, {"job": job.id, **timings})
        record = {"job": job.id, "sealed_at": time.time(), "files": files, "digest": _digest(files),
                  "inputs": inputs, "timings_sha256": file_sha256(tpath)}
        _write_json(self.hashes_path(job.id), record)
        return None

    def digest(self, job_id: str) -> str | None:
        """Hash of a sealed job's outputs (meta.json left out): what downstream jobs record as their input."""
        try:
            return json.loads(self.hashes_path(job_id).read_text())["digest"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def verify(self, job: Job) -> str | None:
        """None if the stored job is exactly what its executor sealed (and its upstream jobs still are what it
        consumed); otherwise what is wrong, naming the file."""
        folder = self.path(job.id)
        rel = lambda name: f"jobs/{job.id}/{name}"  # noqa: E731
        hp = self.hashes_path(job.id)
        try:
            record = json.loads(hp.read_text())
            recorded: dict[str, dict[str, Any]] = record["files"]
        except FileNotFoundError:
            return (f"no hash manifest (hashes/{job.id}.json): its outputs were never sealed by an executor "
                    "(a run killed as it finished, a job run by hand, or an older selbench)")
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"hashes/{job.id}.json is unreadable ({type(e).__name__})"
        try:
            present = _files(folder)
        except OutputError as e:
            return f"jobs/{job.id}: {e}"
        odd = _odd(present)
        if odd is not None:
            return f"{rel(odd)} is not a regular file"
        for name, want in recorded.items():
            p = present.get(name)
            if p is None:
                return f"{rel(name)} is missing"
            try:
                st = p.stat()
                if st.st_size == want["size"] and st.st_size > SMALL_FILE and st.st_mtime_ns == want["mtime_ns"]:
                    continue  # a big file with the recorded size and mtime: not re-hashed (the module docstring)
                got = file_sha256(p) if st.st_size == want["size"] else ""
            except OSError as e:
                return f"{rel(name)} is unreadable ({type(e).__name__})"
            if st.st_size != want["size"]:
                return (f"{rel(name)} changed since the job completed: {st.st_size} bytes, "
                        f"{want['size']} recorded" + (" (truncated)" if st.st_size < want["size"] else ""))
            if got != want["sha256"]:
                return (f"{rel(name)} changed since the job completed (sha256 {got[:12]}… ≠ recorded "
                        f"{want['sha256'][:12]}…)")
        extra = sorted(set(present) - set(recorded))
        if extra:
            return f"{rel(extra[0])} was added after the job completed"
        problem = _readable(job.id, folder, rel)
        if problem:
            return problem
        tp = self.timings_path(job.id)
        if not tp.exists() or file_sha256(tp) != record.get("timings_sha256"):
            return f"timings/{job.id}.json is missing or changed since the job completed"
        for dep, want_digest in record.get("inputs", {}).items():
            got_digest = self.digest(dep)
            if got_digest is None or not self.done(dep):
                return f"upstream job {dep} is not complete"
            if got_digest != want_digest:
                return f"upstream job {dep} was redone with different outputs since this job consumed it"
        return None

    def quarantine(self, job_id: str, reason: str, folder: Path | None = None) -> Path:
        """Move an invalid job's outputs (or a rejected staging ``folder``) aside as evidence:
        ``jobs/<id>.invalid-<UTC time>``; its resume folder goes along, its hash and timing records and the reason
        go to ``invalid/<id>.invalid-<time>.json``, and the job's log says so. Nothing is deleted."""
        src = folder or self.path(job_id)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest, n = self.path(job_id).with_name(f"{job_id}.invalid-{stamp}"), 1
        while dest.exists() or (self.root / "invalid" / f"{dest.name}.json").exists():
            n += 1
            dest = self.path(job_id).with_name(f"{job_id}.invalid-{stamp}-{n}")
        src.rename(dest)
        if folder is not None:
            lock = self._owned.pop(folder, None)
            if lock is not None:
                lock.release(unlink=True)
        resume = self.root / "resume" / job_id
        if resume.exists():
            resume.rename(resume.with_name(dest.name))
        records = {}
        for what, p in (("hashes", self.hashes_path(job_id)), ("timings", self.timings_path(job_id))):
            try:
                records[what] = json.loads(p.read_text())
            except (OSError, ValueError):
                records[what] = None
        _write_json(self.root / "invalid" / f"{dest.name}.json",
                    {"job": job_id, "reason": reason, "moved_to": str(dest.relative_to(self.root)), "at": time.time(),
                     **records})
        if folder is None:  # a published job's records describe what was moved; a rejected staging had none
            self.hashes_path(job_id).unlink(missing_ok=True)
            self.timings_path(job_id).unlink(missing_ok=True)
        with open(self.log_path(job_id), "a") as fh:
            fh.write(f"\n[selbench] {time.strftime('%Y-%m-%d %H:%M:%S')} invalid: {reason}; "
                     f"moved to {dest.relative_to(self.root)}\n")
        return dest


MAX_DEPTH = 32  # folders below a job's output folder
MAX_ENTRIES = 200_000  # files in one job's outputs


class OutputError(Exception):
    """A job's output folder cannot be listed in full (unreadable, too deep, too many files)."""


def _files(folder: Path) -> dict[str, Path]:
    """Every entry of an output folder but its directories (symbolic links and other oddities included, so they
    are refused rather than followed). OutputError when any part cannot be listed — an unreadable folder would
    otherwise hide its contents from the seal — or the tree is deeper or larger than any job writes."""
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}

    def fail(e: OSError) -> None:
        where = Path(e.filename).relative_to(folder).as_posix() if e.filename else "?"
        raise OutputError(f"{where} cannot be listed ({e.strerror or type(e).__name__})")

    for root, dirs, names in os.walk(folder, onerror=fail):  # never descends into linked folders
        here = Path(root)
        depth = len(here.relative_to(folder).parts)
        if depth >= MAX_DEPTH:
            raise OutputError(f"{here.relative_to(folder).parts[0]}/… is nested more than {MAX_DEPTH} folders deep")
        for name in names + [d for d in dirs if (here / d).is_symlink()]:
            found[(here / name).relative_to(folder).as_posix()] = here / name
        if len(found) > MAX_ENTRIES:
            raise OutputError(f"more than {MAX_ENTRIES} files")
    return dict(sorted(found.items()))


def remove_tree(path: Path) -> None:
    """``shutil.rmtree`` that also removes what it cannot (a tree too deep for its recursion): a job's leftovers
    must never stop the next run's cleanup."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except (OSError, RecursionError):
        subprocess.run(["rm", "-rf", "--", str(path)], check=False, capture_output=True)


def _odd(files: dict[str, Path]) -> str | None:
    """The first output that is not a regular file (a link could point anywhere on the host)."""
    return next((name for name, p in files.items() if p.is_symlink() or not p.is_file()), None)


def _digest(files: dict[str, dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps({k: v["sha256"] for k, v in files.items() if k != META},
                                     sort_keys=True).encode()).hexdigest()


def _readable(job_id: str, folder: Path, rel: Callable[[str], str]) -> str | None:
    """meta.json parses and names the job; every other JSON output up to SMALL_FILE parses (a truncated
    results.json or selection is caught even where no hash says so)."""
    try:
        meta = json.loads((folder / META).read_text())
    except FileNotFoundError:
        return f"{rel(META)} is missing"
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested beyond the parser
        return f"{rel(META)} is unreadable ({type(e).__name__}: {str(e)[:80]})"
    if not isinstance(meta, dict) or meta.get("id") != job_id:
        return f"{rel(META)} does not describe job {job_id}"
    for name, p in _files(folder).items():
        if name.endswith(".json") and name != META and p.stat().st_size <= SMALL_FILE:
            try:
                json.loads(p.read_text())
            except (OSError, ValueError, RecursionError) as e:
                return f"{rel(name)} is unreadable ({type(e).__name__}: {str(e)[:80]})"
    return None


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)
