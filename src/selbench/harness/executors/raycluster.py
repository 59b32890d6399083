"""Ray executor: every job is a Ray task that runs the same entrypoint as the local executor
(``python -m selbench.harness.job STORE JOB`` in its own process group), so isolation, logs, the address-space
limit and the timeout are the same; Ray decides where it runs. GPU stages ask Ray for ``num_gpus=1`` when the
cluster has GPUs (a fine-tune: ``executor.finetune_processes``; Ray sets CUDA_VISIBLE_DEVICES for the task); CPU
stages ask for none.

Many machines: every node needs the same environment (this venv) and the store on a shared filesystem at the same
path; the driver's PYTHONPATH and SELBENCH_* variables travel with each task. The driver's scheduler (the local
executor's) creates each job's staging folder, and seals and publishes it when the task reports exit 0; the task
measures the job's wall seconds on its node. A job process dies with the Ray worker that started it
(``PR_SET_PDEATHSIG``); the driver's watchdog kills tagged job processes on the driver's host.
``executor.ray_address`` names the cluster (``host:port``); without it a private single-node cluster is started for
the run and stopped after.

A score job that splits its extraction over ``workers`` processes (``executor.score_workers``) gets a placement group
of that many bundles (each ``threads_per_job`` CPUs and, on a GPU cluster, one GPU), reserved all at once so two such
jobs can never each hold part of what they need: the job's task runs in bundle 0 and starts ranks 1.. as Ray tasks in
the other bundles (selbench.models.ranks.RayRanks), on whichever nodes Ray packed them. The group is removed when the
job ends.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selbench.harness.contracts import Outcome
from selbench.harness.executors.handle import HandleState
from selbench.harness.executors.local import (
    LocalExecutor,
    ProcessHandle,
    job_env,
    score_ranks,
    start_job_process,
)
from selbench.harness.spec import ExecutorSpec
from selbench.harness.store import Job, Store
from selbench.models.ranks import RAY_NODE_ENV, RAY_RANKS_ENV

# How long past its own timeout the driver waits before cancelling a task whose node stopped answering.
DRIVER_GRACE_S = 60.0


def run_job_task(store_root: str, job_id: str, timeout_s: float | None, memory_limit_mb: int | None,
                 threads: int | None, extra_env: dict[str, str]) -> dict:
    """Runs inside a Ray worker: start the job process, enforce the timeout here, on the node that runs it."""
    import ray

    root = Path(store_root)
    gpus = ",".join(str(g) for g in ray.get_gpu_ids())  # what Ray granted this task; none for CPU stages
    env = job_env(threads, gpus, {**extra_env, RAY_NODE_ENV: ray.get_runtime_context().get_node_id()})
    tags: dict[str, str] = {k: extra_env[k] for k in ("SELBENCH_RUNNER", "SELBENCH_JOB") if k in extra_env}
    handle = ProcessHandle(start_job_process(root, job_id, root / "logs" / f"{job_id}.log", env, memory_limit_mb),
                           tags)
    proc, t0, timed_out = handle.proc, time.monotonic(), None
    while proc.poll() is None:
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            handle.kill()
            timed_out = timeout_s
            break
        time.sleep(0.2)
    # measured here, outside the job process, on the node that ran it: the job's wall time the store records
    return {"rc": proc.returncode, "timed_out": timed_out, "seconds": time.monotonic() - t0,
            "n_gpus": len(gpus.split(",")) if gpus else 0}


class RayTaskHandle(HandleState):
    """A submitted task as the scheduler sees it. The task enforces the timeout; the driver only steps in
    ``grace`` seconds later (a lost node). A split score job's task may first wait for its placement group behind
    other jobs: the driver's clock (which started at submission) is not held against it — its grace grows by the
    time the group took to be granted."""

    grace = DRIVER_GRACE_S

    def __init__(self, ref, group=None, ranks: int = 1):
        super().__init__()
        self.ref, self.group = ref, group  # group: the placement group of a split score job's ranks
        self.ranks = ranks  # Ray tasks the job runs as, each with the task's GPUs
        self._queued: float | None = None  # since when the task waits for its group (monotonic)
        if group is not None:
            self._queued, self._granted = time.monotonic(), group.ready()
            self.grace = float("inf")

    def poll(self) -> int | None:
        import ray

        if self._queued is not None and ray.wait([self._granted], timeout=0)[0]:
            self.grace = DRIVER_GRACE_S + time.monotonic() - self._queued
            self._queued = None
        if self.rc is None:
            ready, _ = ray.wait([self.ref], timeout=0)
            if ready:
                try:
                    out = ray.get(self.ref)
                    self.rc, self.timed_out = out["rc"], out["timed_out"]
                    self.seconds, self.n_gpus = out["seconds"], out["n_gpus"] * self.ranks
                except Exception as e:  # worker died, node lost, task cancelled: the cell says so
                    self.rc = -1
                    first = str(e).splitlines()[0] if str(e) else ""
                    self.error = f"ray task failed: {type(e).__name__}: {first}"[:500]
                self._release()
        return self.rc

    def kill(self) -> None:
        import ray

        ray.cancel(self.ref, force=True)
        self._release()
        self.rc = -9
        self.error = "ray task cancelled by the driver: no answer past its timeout"

    def _release(self) -> None:
        """Remove the job's placement group: Ray ends the rank tasks still in it."""
        if self.group is not None:
            release(self.group)
            self.group = None


def release(group) -> None:
    """Remove a placement group; one Ray already lost (its driver or node gone) is not an error of the job's."""
    from ray.util import remove_placement_group

    try:
        remove_placement_group(group)
    except Exception:  # noqa: BLE001 — best effort: it goes with the driver's Ray session anyway
        pass


class RayExecutor(LocalExecutor):
    """The local scheduler (dependency order, ``max_parallel``, failures end only their cell) with Ray tasks
    instead of subprocesses."""

    def __init__(self, spec: ExecutorSpec, store: Store):
        if spec.gpus:
            raise ValueError("executor.gpus lists local device ids; with kind: ray, Ray assigns GPUs: "
                             "leave it empty")
        super().__init__(spec, store)
        self._remote: Any = None  # the Ray remote function, made once the cluster is up
        self._gpu_jobs = False
        self._cluster: dict[str, str] = {}  # the GCS address and namespace a split score job's ranks join

    def run(self, jobs: list[Job], on_event: Callable[[Job, Outcome | None], None] = lambda j, o: None
            ) -> dict[str, Outcome]:
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        started = False
        if not ray.is_initialized():
            if self.spec.ray_address:
                ray.init(address=self.spec.ray_address, log_to_driver=False)
            else:  # a private cluster for this run; a short temp dir (Ray's socket paths have a length limit)
                tmp = tempfile.mkdtemp(prefix="sbray-", dir="/tmp")
                slots = max(self.spec.max_parallel, self.spec.score_workers, 1)
                ray.init(num_cpus=slots * (self.spec.threads_per_job or 1),
                         include_dashboard=False, log_to_driver=False, _temp_dir=tmp)
            started = True
        try:
            self._gpu_jobs = ray.cluster_resources().get("GPU", 0) > 0
            context = ray.get_runtime_context()
            self._cluster = {"address": context.gcs_address, "namespace": context.namespace}
            self._check_rank_groups(jobs, [n["Resources"] for n in ray.nodes() if n.get("Alive")])
            self._remote = ray.remote(max_retries=0)(run_job_task)
            return super().run(jobs, on_event)
        finally:
            if started:
                ray.shutdown()

    def _bundle(self) -> dict[str, float]:
        """What each rank of a split score job reserves: its CPUs and, on a GPU cluster, one GPU."""
        gpus = {"GPU": 1.0} if self._gpu_jobs else {}
        return {"CPU": float(self.spec.threads_per_job or 1), **gpus}

    def _check_rank_groups(self, jobs: list[Job], nodes: list[dict[str, float]]) -> None:
        """Fail before any work when the cluster's nodes could never hold a split score job's ranks together (its
        placement group would wait forever): one bundle per rank, each on a single node; or when rank 0 could not
        join the cluster (an address-space limit)."""
        bundle = self._bundle()
        fits = sum(int(min(node.get(k, 0.0) // v for k, v in bundle.items())) for node in nodes)
        for job in jobs:
            if (n := score_ranks(job)) == 1:
                continue
            if self.spec.memory_limit_mb is not None:
                raise ValueError(f"score job {job.id}: executor.score_workers {n} under Ray cannot run with "
                                 "executor.memory_limit_mb: rank 0 joins the cluster as a Ray driver, and Ray does not "
                                 "start under an address-space limit (ray.init aborts even at 8 GB); drop one of them")
            if fits < n:
                per = " + ".join(f"{v:g} {k}" for k, v in bundle.items())
                have = "; ".join(", ".join(f"{node.get(k, 0.0):g} {k}" for k in bundle) for node in nodes)
                raise ValueError(f"score job {job.id}: executor.score_workers {n} needs {n} bundles of {per} "
                                 f"at once; the Ray cluster's nodes ({have}) hold {fits}")

    def _launch(self, job: Job, gpus: tuple[int, ...], staging: Path) -> RayTaskHandle:
        from ray.util import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        extra = {k: v for k, v in os.environ.items() if k == "PYTHONPATH" or k.startswith("SELBENCH_")}
        extra.update(self.spec.job_env())
        extra.update(self.job_tags(job, staging))  # the staging folder (shared filesystem) and the runner's tags
        options: dict[str, Any] = {"num_cpus": self.spec.threads_per_job or 1,
                                   "num_gpus": self.devices_needed(job) if self._gpu_jobs else 0}
        group = None
        if (n := score_ranks(job)) > 1:  # all ranks reserved at once; this task is rank 0, in bundle 0
            bundle = self._bundle()
            name = f"selbench-{job.id}-{uuid.uuid4().hex[:8]}"
            group = placement_group([bundle] * n, strategy="PACK", name=name)
            options.update(num_gpus=bundle.get("GPU", 0.0), scheduling_strategy=PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=0))
            extra[RAY_RANKS_ENV] = json.dumps({
                **self._cluster, "placement_group": name, "cpus": bundle["CPU"], "gpus": bundle.get("GPU", 0.0),
                "env": sorted(self.spec.job_env())})  # names only: the ranks copy the values from rank 0's
        try:
            ref = self._remote.options(**options).remote(
                str(self.store.root.resolve()), job.id, self.spec.timeout_s.get(job.stage),
                self.spec.memory_limit_mb, self.spec.threads_per_job, extra)
        except BaseException:
            if group is not None:
                release(group)
            raise
        return RayTaskHandle(ref, group, n)
