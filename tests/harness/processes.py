"""Which processes a run started for a store: what the runner-death and warm-worker tests look for afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import psutil


def job_processes(store: Path) -> list[psutil.Process]:
    """Every process the executor started for jobs of ``store``: fresh interpreters (``python -m
    selbench.harness.job STORE JOB``), the warm worker and the jobs forked from it — all carry the store's tag in the
    environment they were started with (a forked job shows its worker's, which has it too)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get("SELBENCH_STORE") == str(store.resolve()):
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found
