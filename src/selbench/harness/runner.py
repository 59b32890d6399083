"""Run a spec: world (if embedded) → plan → execute → verify → collect results and the leaderboard. The report is
the caller's next step (``selbench.reports.build_report(result.out)``): the harness sits below the reports.

A run holds its run lock (``STORE/locks/runs/<name>``) from start to leaderboard: a second runner of the same spec
on the same store waits for it and then reuses every job it completed. Before results are collected, every job of
the plan is verified against its seal and every selection re-validated by the harness (``checked_selection``); a
job that fails is moved aside and the plan executed once more; what fails again ends its cell with the reason.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from selbench.harness.contracts import Outcome, StoreState
from selbench.harness.executors import make_executor
from selbench.harness.plan import Plan, build_plan
from selbench.harness.results import collect, write_if_changed
from selbench.harness.spec import RunSpec, load_spec
from selbench.harness.store import Job, Store
from selbench.leaderboard import leaderboard


@dataclass
class RunResult:
    spec: RunSpec
    plan: Plan
    statuses: dict[str, Outcome]
    results: pd.DataFrame
    timings: pd.DataFrame
    board: pd.DataFrame
    out: Path


def _stderr(message: str) -> None:
    print(f"[selbench] {message}", file=sys.stderr, flush=True)


def build_world(spec: RunSpec) -> None:
    """Generate (or reuse) the spec's embedded world. ``embedded.build_world`` locks the folder, so concurrent
    runners — on this store or another — never build it at once."""
    if spec.world is None:
        return
    from selbench.embedded import build_world as build

    w = spec.world
    build(w.out, seed=w.seed, n_samples=w.samples, n_bench=w.bench_items, noise=w.noise, log=lambda m: None)


def prepare_spec(path: str | Path, base: Path | None = None) -> RunSpec:
    spec = load_spec(path).resolved(base or Path.cwd())
    build_world(spec)
    return spec


def run(path: str | Path, *, base: Path | None = None,
        on_event: Callable[[Job, Outcome | None], None] = lambda j, o: None,
        on_message: Callable[[str], None] = _stderr) -> RunResult:
    spec = load_spec(path).resolved(base or Path.cwd())
    store = Store(spec.store)
    with store.locked("runs", spec.name, f"run {spec.name}",
                      on_wait=lambda who: on_message(f"run {spec.name!r} is in progress in this store ({who}): "
                                                     "waiting for it to finish, then reusing its jobs")):
        build_world(spec)
        plan = build_plan(spec)
        executor = make_executor(spec.executor, store)
        executor.on_message = on_message
        statuses = executor.run(plan.jobs, on_event)
        invalid = verify_outputs(plan, store, on_message)
        if invalid:
            on_message(f"{len(invalid)} job(s) failed verification at collection: running them again")
            again = executor.run(affected(plan, set(invalid)), on_event)
            statuses.update({jid: o for jid, o in again.items() if o.status != "cached" or jid not in statuses})
            for jid, reason in verify_outputs(plan, store, on_message, final=True).items():
                statuses[jid] = Outcome("failed", f"invalid at collection: {reason}")
        results, timings = collect(spec, plan, store, statuses)
        board = leaderboard(results, timings, spec.columns)
        out = store.root / "runs" / spec.name
        write_if_changed(out / "leaderboard.parquet", board.to_parquet(index=False))
    return RunResult(spec, plan, statuses, results, timings, board, out)


def affected(plan: Plan, invalid: set[str]) -> list[Job]:
    """The jobs to execute again after ``invalid`` were moved aside: those, everything downstream of them, and the
    upstream jobs they need (reused: they verify)."""
    down = set(invalid)
    for job in plan.jobs:  # dependency order
        if any(d in down for d in job.deps.values()):
            down.add(job.id)
    by_id = {j.id: j for j in plan.jobs}
    need, todo = set(down), list(down)
    while todo:
        for dep in by_id[todo.pop()].deps.values():
            if dep not in need:
                need.add(dep)
                todo.append(dep)
    return [j for j in plan.jobs if j.id in need]


def verify_outputs(plan: Plan, store: Store, on_message: Callable[[str], None] = _stderr,
                   final: bool = False) -> dict[str, str]:
    """Check every completed job of the plan against its seal, and every selection with the harness's own check;
    move what fails aside. Returns job id → reason. Jobs downstream of a failing one are left for the next
    execution to judge (it redoes the upstream job first), unless ``final``."""
    from selbench.harness.stages.select import checked_selection
    from selbench.pool.manifest import Manifest, load_manifest
    from selbench.selectors.base import SelectionError

    invalid: dict[str, str] = {}
    pools: dict[str, Manifest] = {}
    for job in plan.jobs:  # dependency order
        if not final and any(d in invalid for d in job.deps.values()):
            continue
        if not store.done(job.id):
            continue
        with store.locked("jobs", job.id, f"verifying {job.id}"):
            if not store.done(job.id):
                continue
            problem = store.verify(job)
            if problem is None and job.stage == "select":
                pool_id = job.deps["pool"]
                if pool_id not in pools:
                    pools[pool_id] = load_manifest(store.path(pool_id) / "manifest.parquet")
                try:
                    checked_selection(store, job, pools[pool_id])
                except SelectionError as e:
                    problem = str(e)
            if problem is None:
                continue
            moved = store.quarantine(job.id, problem)
            on_message(f"{job.id} is invalid: {problem}; moved to {moved.relative_to(store.root)}")
            invalid[job.id] = problem
    return invalid


def status(path: str | Path, base: Path | None = None) -> tuple[Plan, dict[str, StoreState]]:
    """Per job: done / failed / running / pending, read from the store (no execution). Running = an executor
    holds the job's lock or a live process owns one of its staging folders."""
    spec = load_spec(path).resolved(base or Path.cwd())
    store = Store(spec.store)
    plan = build_plan(spec) if spec.pool and spec.pool.path.exists() else None
    if plan is None:
        raise ValueError(f"pool {spec.pool.path if spec.pool else '?'} does not exist yet: nothing has run")
    states: dict[str, StoreState] = {}
    for job in plan.jobs:
        if store.done(job.id):
            states[job.id] = "done"
        elif store.job_busy(job.id) or store.staging_live(job.id):
            states[job.id] = "running"
        elif store.failure_path(job.id).exists():
            states[job.id] = "failed"
        else:
            states[job.id] = "pending"
    return plan, states

