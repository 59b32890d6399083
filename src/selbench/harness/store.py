"""Content-addressed artifact store. A job's outputs live in ``jobs/<stage>-<key>/``; they are written into a
temporary folder and renamed into place, with ``meta.json`` (lineage, resolved config, environment, timings)
— so a folder that exists is complete, and a killed job leaves only a ``.tmp`` folder that the next run discards.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import selbench
from selbench.harness.contracts import Stage

# Bumped whenever a stage's output layout changes, so old store entries are recomputed rather than misread.
STORE_FORMAT = 2


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


@dataclass
class Job:
    stage: Stage
    config: dict[str, Any]  # a StageConfig's canonical dump (selbench.harness.contracts): stages parse it back
    deps: dict[str, str] = field(default_factory=dict)  # role → upstream job id
    cell: dict[str, Any] = field(default_factory=dict)  # selector / budget / seed, for status and results

    @property
    def key(self) -> str:
        return stable_hash({"stage": self.stage, "config": self.config, "deps": self.deps,
                            "version": selbench.__version__, "store_format": STORE_FORMAT})

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


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        for sub in ("jobs", "logs", "specs"):
            if not (self.root / sub).is_dir():  # a sandboxed job sees the store read-only
                (self.root / sub).mkdir(parents=True, exist_ok=True)

    def path(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def log_path(self, job_id: str) -> Path:
        return self.root / "logs" / f"{job_id}.log"

    def failure_path(self, job_id: str) -> Path:
        """Where an executor records why a job failed (removed when the job is started again)."""
        return self.root / "failed" / f"{job_id}.json"

    def done(self, job_id: str) -> bool:
        return (self.path(job_id) / "meta.json").exists()

    def meta(self, job_id: str) -> dict[str, Any]:
        return json.loads((self.path(job_id) / "meta.json").read_text())

    def write_job(self, job: Job) -> Path:
        p = self.root / "specs" / f"{job.id}.json"
        if not p.exists():
            tmp = p.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(asdict(job), indent=1, default=str))
            tmp.replace(p)
        return p

    def read_job(self, job_id: str) -> Job:
        return Job(**json.loads((self.root / "specs" / f"{job_id}.json").read_text()))

    def staging(self, job_id: str) -> Path:
        """A fresh temporary folder for a job's outputs (stale ones from killed runs are removed)."""
        for stale in self.path(job_id).parent.glob(f"{job_id}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self.path(job_id).with_name(f"{job_id}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, job: Job, tmp: Path, meta: dict[str, Any]) -> Path:
        self.finish(job, tmp, meta)
        return self.publish(job.id, tmp)

    def finish(self, job: Job, tmp: Path, meta: dict[str, Any]) -> None:
        """Write ``meta.json`` into a staging folder (the last file a job writes)."""
        full = {"id": job.id, "stage": job.stage, "config": job.config, "deps": job.deps, "cell": job.cell,
                "environment": environment(), **meta}
        (tmp / "meta.json").write_text(json.dumps(full, indent=1, default=str))

    def publish(self, job_id: str, tmp: Path) -> Path:
        """Rename a finished staging folder into place (atomic)."""
        dest = self.path(job_id)
        if dest.exists():  # another worker finished the same job first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(dest)
        return dest
