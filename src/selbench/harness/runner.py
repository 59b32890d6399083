"""Run a spec: world (if embedded) → plan → execute → collect results and the leaderboard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from selbench.harness.executors import make_executor
from selbench.harness.plan import Plan, build_plan
from selbench.harness.results import collect, leaderboard
from selbench.harness.spec import RunSpec, load_spec
from selbench.harness.store import Job, Store
from selbench.reports import build_report


@dataclass
class RunResult:
    spec: RunSpec
    plan: Plan
    statuses: dict
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
        on_event: Callable[[Job, object], None] = lambda j, o: None) -> RunResult:
    spec = prepare_spec(path, base)
    store = Store(spec.store)
    plan = build_plan(spec)
    statuses = make_executor(spec.executor, store).run(plan.jobs, on_event)
    results, timings = collect(spec, plan, store, statuses)
    board = leaderboard(results, timings, spec.benchmarks)
    out = store.root / "runs" / spec.name
    board.to_parquet(out / "leaderboard.parquet", index=False)
    build_report(out)  # the report stage: HTML + plots + LaTeX/Markdown/CSV, skipped when nothing changed
    return RunResult(spec, plan, statuses, results, timings, board, out)


def status(path: str | Path, base: Path | None = None) -> tuple[Plan, dict[str, str]]:
    """Per job: done / failed / running / pending, read from the store (no execution)."""
    spec = load_spec(path).resolved(base or Path.cwd())
    store = Store(spec.store)
    plan = build_plan(spec) if spec.pool and spec.pool.path.exists() else None
    if plan is None:
        raise ValueError(f"pool {spec.pool.path if spec.pool else '?'} does not exist yet: nothing has run")
    states = {}
    for job in plan.jobs:
        if store.done(job.id):
            states[job.id] = "done"
        elif (store.root / "failed" / f"{job.id}.json").exists():
            states[job.id] = "failed"
        elif any(store.path(job.id).parent.glob(f"{job.id}.tmp-*")):
            states[job.id] = "running"
        else:
            states[job.id] = "pending"
    return plan, states
