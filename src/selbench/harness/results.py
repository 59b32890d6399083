"""Results store: one parquet row per (run, selector, budget, seed, benchmark, metric) with lineage ids, a
timings table per cell, and the leaderboard frame (ARP and OSC per cell)."""

from __future__ import annotations

import json

import pandas as pd

from selbench.evaluators.relative import ARP_VERSION, OSC_VERSION, arp, osc
from selbench.harness.plan import Plan
from selbench.harness.spec import RunSpec
from selbench.harness.store import Store, stable_hash

SELECTION_PARTS = ("feature_extraction", "proxy_training", "scoring", "selection")


def collect(spec: RunSpec, plan: Plan, store: Store, statuses: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    spec_hash = stable_hash(spec.model_dump(mode="json"))
    rows, timing_rows = [], []
    for cell in [plan.reference, *plan.cells]:
        lineage = {f"{stage}_job": jid for stage, jid in cell.jobs.items()}
        ev = cell.jobs["evaluate"]
        base = {"run": spec.name, "spec_hash": spec_hash, "selector": cell.selector, "budget": cell.budget,
                "seed": cell.seed, **lineage}
        failed = next((statuses[j] for j in cell.jobs.values() if j in statuses
                       and statuses[j].status in ("failed", "blocked")), None)
        t = {**base, "status": "done" if store.done(ev) else (failed.status if failed else "missing"),
             "reason": failed.reason if failed else None}
        parts: dict[str, float] = {}
        for stage in ("score", "select", "finetune", "evaluate"):
            jid = cell.jobs.get(stage)
            if jid and store.done(jid):
                m = store.meta(jid)["timings"]
                t[f"{stage}_wall_s"] = m["wall_s"]
                t[f"{stage}_gpu_s"] = m["gpu_s"]
                t["device"] = m["device"]
                for k, v in m.get("parts", {}).items():
                    parts[k] = parts.get(k, 0.0) + v
        for p in SELECTION_PARTS:
            t[f"{p}_s"] = parts.get(p, 0.0)
        # Selection cost = everything the selector spent: its score job (extraction, proxy training, scoring)
        # plus the select step. Wall seconds of the jobs, which include model loading.
        t["selection_s"] = (t.get("score_wall_s") or 0.0) + (t.get("select_wall_s") or 0.0)
        t["finetune_s"] = t.get("finetune_wall_s")
        timing_rows.append(t)
        if store.done(ev):
            for r in json.loads((store.path(ev) / "results.json").read_text()):
                rows.append({**base, **r, "eval_meta": ev})
    results = pd.DataFrame(rows)
    timings = pd.DataFrame(timing_rows)
    out = store.root / "runs" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    results.to_parquet(out / "results.parquet", index=False)
    timings.to_parquet(out / "timings.parquet", index=False)
    (out / "spec.json").write_text(json.dumps(spec.model_dump(mode="json"), indent=1, default=str))
    return results, timings


def leaderboard(results: pd.DataFrame, timings: pd.DataFrame, benchmarks: list[str]) -> pd.DataFrame:
    """One row per (selector, budget, seed): ARP, per-benchmark relative performance, OSC."""
    if results.empty:
        return pd.DataFrame()
    prim = results[results["primary"]]
    ref = prim[prim["selector"] == "full"].set_index("benchmark")["value"].to_dict()
    full_ft = timings.loc[timings["selector"] == "full", "finetune_s"]
    full_ft_s = float(full_ft.iloc[0]) if len(full_ft) and pd.notna(full_ft.iloc[0]) else None
    rows = []
    for _, t in timings.iterrows():
        vals = prim[(prim["selector"] == t["selector"]) & (prim["budget"] == t["budget"])
                    & (prim["seed"] == t["seed"])].set_index("benchmark")["value"].to_dict()
        row = {"selector": t["selector"], "budget": t["budget"], "seed": t["seed"], "status": t["status"],
               "reason": t["reason"], ARP_VERSION: arp(vals, ref, benchmarks)}
        for b in benchmarks:
            row[b] = vals.get(b)
        if t["selector"] != "full":
            row[OSC_VERSION] = osc(t["selection_s"], t["finetune_s"], full_ft_s)
            row["selection_s"], row["finetune_s"] = t["selection_s"], t["finetune_s"]
        rows.append(row)
    return pd.DataFrame(rows)
