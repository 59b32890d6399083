"""Run a spec: world (if embedded) → plan → execute → collect results and the leaderboard. The report is the
caller's next step (``selbench.reports.build_report(result.out)``): the harness sits below the reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from selbench.harness.contracts import Outcome, StoreState
from selbench.harness.executors import make_executor
from selbench.harness.plan import Plan, build_plan
from selbench.harness.results import collect
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


def prepare_spec(path: str | Path, base: Path | None = None) -> RunSpec:
    spec = load_spec(path).resolved(base or Path.cwd())
    if spec.world is not None:
        from selbench.embedded import build_world

        w = spec.world
        build_world(w.out, seed=w.seed, n_samples=w.samples, n_bench=w.bench_items, log=lambda m: None)
    return spec


def run(path: str | Path, *, base: Path | None = None,
        on_event: Callable[[Job, Outcome | None], None] = lambda j, o: None) -> RunResult:
    spec = prepare_spec(path, base)
    store = Store(spec.store)
    plan = build_plan(spec)
    statuses = make_executor(spec.executor, store).run(plan.jobs, on_event)
    results, timings = collect(spec, plan, store, statuses)
    board = leaderboard(results, timings, spec.columns)
    out = store.root / "runs" / spec.name
    board.to_parquet(out / "leaderboard.parquet", index=False)
    return RunResult(spec, plan, statuses, results, timings, board, out)


def status(path: str | Path, base: Path | None = None) -> tuple[Plan, dict[str, StoreState]]:
    """Per job: done / failed / running / pending, read from the store (no execution)."""
    spec = load_spec(path).resolved(base or Path.cwd())
    store = Store(spec.store)
    plan = build_plan(spec) if spec.pool and spec.pool.path.exists() else None
    if plan is None:
        raise ValueError(f"pool {spec.pool.path if spec.pool else '?'} does not exist yet: nothing has run")
    states: dict[str, StoreState] = {}
    for job in plan.jobs:
        if store.done(job.id):
            states[job.id] = "done"
        elif store.failure_path(job.id).exists():
            states[job.id] = "failed"
        elif any(store.path(job.id).parent.glob(f"{job.id}.tmp-*")):
            states[job.id] = "running"
        else:
            states[job.id] = "pending"
    return plan, states
