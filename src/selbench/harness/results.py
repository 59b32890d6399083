"""Results store: one parquet row per (run, selector, budget, seed, benchmark, metric) with lineage ids, a timings
table per cell, and the per-item outcomes of every cell (``items.parquet``: selector, budget, seed, benchmark, item,
kind, stats) for the statistics. The leaderboard frame built from them lives in ``selbench.leaderboard``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from selbench.harness.contracts import FAILED
from selbench.harness.executors.local import Outcome
from selbench.harness.plan import Plan
from selbench.harness.spec import RunSpec
from selbench.harness.stages.evaluate import ITEM_COLUMNS, ITEMS
from selbench.harness.store import Store
from selbench.leaderboard import SELECTION_PARTS

RUN_ITEM_KEYS = ["selector", "budget", "seed"]


def collect(spec: RunSpec, plan: Plan, store: Store, statuses: dict[str, Outcome]
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    spec_hash = spec.fingerprint()
    rows, timing_rows, items = [], [], []
    prep = plan.reference.jobs["prepare"]
    fingerprint = store.meta(prep).get("content_hash") if store.done(prep) else None  # the pool it ran on
    for cell in [plan.reference, *plan.cells]:
        lineage = {f"{stage}_job": jid for stage, jid in cell.jobs.items()}
        ev = cell.jobs["evaluate"]
        base = {"run": spec.name, "spec_hash": spec_hash, "pool_fingerprint": fingerprint, "selector": cell.selector,
                "budget": cell.budget, "seed": cell.seed, **lineage}
        failed = next((statuses[j] for j in cell.jobs.values() if j in statuses
                       and statuses[j].status in FAILED), None)
        t: dict[str, Any] = {**base, "status": "done" if store.done(ev) else (failed.status if failed else "missing"),
             "reason": failed.reason if failed else None}
        parts: dict[str, float] = {}
        for stage in ("score", "select", "finetune", "evaluate"):
            jid = cell.jobs.get(stage)
            if jid and store.done(jid):
                meta = store.meta(jid)
                m = meta["timings"]
                t[f"{stage}_wall_s"] = m["wall_s"]
                t[f"{stage}_gpu_s"] = m["gpu_s"]
                t["device"] = m["device"]
                for k, v in m.get("parts", {}).items():
                    parts[k] = parts.get(k, 0.0) + v
                if stage == "evaluate":  # versions and commit the checkpoint was evaluated with
                    env = meta.get("environment", {})
                    t.update({k: env.get(k) for k in ("commit", "selbench", "torch", "transformers")})
        for p in SELECTION_PARTS:
            t[f"{p}_s"] = parts.get(p, 0.0)
        # Selection cost = everything the selector spent: its score job (extraction, proxy training, scoring)
        # plus the select step. Wall seconds of the jobs, which include model loading.
        # None while the score or select job is not done: a failed selector has no selection time, not 0 s.
        t["selection_s"] = (t["score_wall_s"] + t["select_wall_s"]
                            if "score_wall_s" in t and "select_wall_s" in t else None)
        t["finetune_s"] = t.get("finetune_wall_s")
        timing_rows.append(t)
        if store.done(ev):
            for r in json.loads((store.path(ev) / "results.json").read_text()):
                rows.append({**base, **r, "eval_meta": ev})
            if (store.path(ev) / ITEMS).exists():
                part = pd.read_parquet(store.path(ev) / ITEMS)
                items.append(part.assign(selector=cell.selector, budget=cell.budget, seed=cell.seed))
    results = pd.DataFrame(rows)
    timings = pd.DataFrame(timing_rows)
    out = store.root / "runs" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    write_if_changed(out / "results.parquet", results.to_parquet(index=False))
    write_if_changed(out / "timings.parquet", timings.to_parquet(index=False))
    run_items = pd.concat(items, ignore_index=True) if items else pd.DataFrame(columns=[*RUN_ITEM_KEYS,
                                                                                       *ITEM_COLUMNS])
    write_if_changed(out / ITEMS, run_items[[*RUN_ITEM_KEYS, *ITEM_COLUMNS]].to_parquet(index=False))
    write_if_changed(out / "spec.json", json.dumps(spec.recorded(), indent=1, default=str).encode())
    return results, timings


def write_if_changed(path: Path, data: bytes | None) -> bool:
    """Write ``data`` unless the file already holds exactly it (a re-run that changes nothing leaves the run
    folder's files and their mtimes alone: the nightly and file watchers see no change). True if written."""
    assert data is not None
    if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True
