"""The one job entrypoint every executor runs: ``python -m selbench.harness.job STORE JOB_ID``.

Reads the job from the store, runs its stage into a staging folder and writes ``meta.json`` last, with the job's
own timings (wall seconds, GPU-seconds, device name, peak memory, the parts breakdown). Exit code 0 = finished;
anything else = failed.

Under an executor ``SELBENCH_STAGING`` names the staging folder the executor made: the job writes there and exits;
the executor checks the outputs, hashes them, records the wall time *it* measured and publishes the folder
(docs/containers.md, "Trust") — the job's timings are kept as self-reported. Run by hand (no ``SELBENCH_STAGING``)
the job commits its own folder; nothing seals it, so the next run verifies it as unsealed and redoes it.
"""

from __future__ import annotations

import importlib
import os
import resource
import sys
import time
from pathlib import Path

from selbench.harness.stages import STAGES
from selbench.harness.store import Store


def device_info() -> tuple[str, int]:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0), torch.cuda.device_count()
    except Exception:
        pass
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)", 0


def execute(store_root: str, job_id: str) -> int:
    store = Store(store_root)
    if store.done(job_id):
        return 0
    job = store.read_job(job_id)
    module, _, fn = STAGES[job.stage].partition(":")
    stage = getattr(importlib.import_module(module), fn)
    # The staging folder the executor gives it (a sandboxed selector job under Docker sees the store read-only and
    # can write nowhere else); the executor seals and publishes it after a clean exit.
    given = os.environ.get("SELBENCH_STAGING")
    tmp = Path(given) if given else store.staging(job_id)
    t0 = time.perf_counter()
    meta = stage(job, store, tmp) or {}
    wall = time.perf_counter() - t0
    device, n_gpus = device_info()
    peak_gpu = meta.pop("peak_gpu_mb", None)  # a stage whose work ran in child processes reports theirs
    if n_gpus and peak_gpu is None:
        import torch

        peak_gpu = torch.cuda.max_memory_allocated() / 2**20
    # the largest of this process and its (waited-for) descendants, e.g. multi-process fine-tuning ranks
    peak_rss = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    timings = {"wall_s": wall, "gpu_s": wall * n_gpus, "device": device, "n_gpus": n_gpus,
               "peak_rss_mb": peak_rss / 1024,
               "peak_gpu_mb": peak_gpu, "parts": meta.pop("parts", {}), "reported_by": "job"}
    if given:
        store.finish(job, tmp, {"timings": timings, **meta})
    else:
        store.commit(job, tmp, {"timings": timings, **meta})
    return 0


if __name__ == "__main__":
    sys.exit(execute(sys.argv[1], sys.argv[2]))
