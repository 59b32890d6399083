"""Results store: one parquet row per (run, selector, budget, seed, benchmark, metric) with lineage ids, a
timings table per cell, and the leaderboard frame (ARP and OSC per cell)."""

from __future__ import annotations

import json

import pandas as pd

from selbench.evaluators.relative import ARP_VERSION, OSC_VERSION, arp, osc, relative_performance
from selbench.harness.plan import Plan
from selbench.harness.spec import RunSpec
from selbench.harness.store import Store, stable_hash

SELECTION_PARTS = ("feature_extraction", "proxy_training", "scoring", "selection")
LINEAGE_COLUMNS = ("spec_hash", "prepare_job", "score_job", "select_job", "finetune_job", "evaluate_job",
                   "commit", "selbench", "torch", "transformers")


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
    results = pd.DataFrame(rows)
    timings = pd.DataFrame(timing_rows)
    out = store.root / "runs" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    results.to_parquet(out / "results.parquet", index=False)
    timings.to_parquet(out / "timings.parquet", index=False)
    (out / "spec.json").write_text(json.dumps(spec.model_dump(mode="json"), indent=1, default=str))
    return results, timings


def leaderboard(results: pd.DataFrame, timings: pd.DataFrame, benchmarks: list[str]) -> pd.DataFrame:
    """One row per (selector, budget, seed): status, ARP, each benchmark's primary value and relative performance
    (``rel_<benchmark>``), OSC and the selection-time parts, GPU seconds, device and lineage ids."""
    if timings.empty:
        return pd.DataFrame()
    prim = results[results["primary"].astype(bool)] if not results.empty else pd.DataFrame(
        columns=["selector", "budget", "seed", "benchmark", "value"])
    ref_rows = prim[prim["selector"] == "full"]
    if ref_rows["benchmark"].duplicated().any():
        raise ValueError("the results hold more than one full-data reference value per benchmark")
    ref = ref_rows.set_index("benchmark")["value"].to_dict()
    full_ft = timings.loc[timings["selector"] == "full", "finetune_s"]
    full_ft_s = float(full_ft.iloc[0]) if len(full_ft) and pd.notna(full_ft.iloc[0]) else None
    rows = []
    for _, t in timings.iterrows():
        vals = prim[(prim["selector"] == t["selector"]) & (prim["budget"] == t["budget"])
                    & (prim["seed"] == t["seed"])].set_index("benchmark")["value"].to_dict()
        vals = {b: (None if pd.isna(v) else float(v)) for b, v in vals.items()}
        row = {"selector": t["selector"], "budget": t["budget"], "seed": int(t["seed"]), "status": t["status"],
               "reason": t.get("reason"), ARP_VERSION: arp(vals, ref, benchmarks)}
        for b in benchmarks:
            row[b] = vals.get(b)
        for b in benchmarks:
            row[f"rel_{b}"] = relative_performance(vals.get(b), ref.get(b))
        is_ref = t["selector"] == "full"
        sel_s, ft_s = _num(t.get("selection_s")), _num(t.get("finetune_s"))
        row[OSC_VERSION] = None if is_ref else osc(sel_s if t["status"] == "done" else None, ft_s, full_ft_s)
        row["selection_s"] = None if is_ref else sel_s
        for part in SELECTION_PARTS:
            row[f"{part}_s"] = None if is_ref else _num(t.get(f"{part}_s"))
        row["finetune_s"] = ft_s
        gpu = [_num(t.get(f"{s}_gpu_s")) for s in ("score", "select", "finetune")]
        row["gpu_hours"] = sum(g for g in gpu if g is not None) / 3600.0
        row["device"] = t.get("device")
        for col in LINEAGE_COLUMNS:
            row[col] = t.get(col)
        rows.append(row)
    return pd.DataFrame(rows)


def _num(v) -> float | None:
    return None if v is None or pd.isna(v) else float(v)
