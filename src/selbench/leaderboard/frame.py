"""The leaderboard frame: one row per (selector, budget, seed) with its status, ARP (``arp_v1``), each
benchmark's primary value and relative performance, OSC (``osc_v1``), the selection-time parts, GPU hours,
device and lineage ids — built from the harness's results and timings tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from selbench.evaluators.relative import ARP_VERSION, OSC_VERSION, arp, osc, relative_performance

REFERENCE = "full"  # the full-data reference's selector label: a reserved name, never a selector's
REFERENCE_BUDGET = "100%"
CellStatus = Literal["done", "failed", "blocked", "missing"]  # per cell, from its evaluate job and upstream jobs
SELECTION_PARTS = ("feature_extraction", "proxy_training", "scoring", "selection")
LINEAGE_COLUMNS = ("spec_hash", "prepare_job", "score_job", "select_job", "finetune_job", "evaluate_job",
                   "commit", "selbench", "torch", "transformers")


@dataclass
class LeaderboardRow:
    """One cell of the leaderboard. ``record()`` flattens it into the frame's columns: each benchmark's value
    under its name and its relative performance under ``rel_<benchmark>``."""

    selector: str
    budget: str
    seed: int
    status: CellStatus
    reason: str | None
    arp: float | None
    values: dict[str, float | None]
    relative: dict[str, float | None]
    osc: float | None
    selection_s: float | None
    parts: dict[str, float | None]  # SELECTION_PARTS → seconds
    finetune_s: float | None
    gpu_hours: float
    device: str | None
    lineage: dict[str, Any] = field(default_factory=dict)  # LINEAGE_COLUMNS

    def record(self) -> dict[str, Any]:
        row: dict[str, Any] = {"selector": self.selector, "budget": self.budget, "seed": self.seed,
                               "status": self.status, "reason": self.reason, ARP_VERSION: self.arp}
        row.update(self.values)
        row.update({f"rel_{b}": v for b, v in self.relative.items()})
        row[OSC_VERSION] = self.osc
        row["selection_s"] = self.selection_s
        row.update({f"{p}_s": v for p, v in self.parts.items()})
        row.update(finetune_s=self.finetune_s, gpu_hours=self.gpu_hours, device=self.device)
        row.update({c: self.lineage.get(c) for c in LINEAGE_COLUMNS})
        return row


def leaderboard(results: pd.DataFrame, timings: pd.DataFrame, benchmarks: Sequence[str]) -> pd.DataFrame:
    """The frame of ``LeaderboardRow.record()`` rows, in the timings' cell order (the reference first)."""
    if timings.empty:
        return pd.DataFrame()
    prim = results[results["primary"].astype(bool)] if not results.empty else pd.DataFrame(
        columns=["selector", "budget", "seed", "benchmark", "value"])
    ref_rows = prim[prim["selector"] == REFERENCE]
    if ref_rows["benchmark"].duplicated().any():
        raise ValueError("the results hold more than one full-data reference value per benchmark")
    ref = ref_rows.set_index("benchmark")["value"].to_dict()
    full_ft = timings.loc[timings["selector"] == REFERENCE, "finetune_s"]
    full_ft_s = float(full_ft.iloc[0]) if len(full_ft) and pd.notna(full_ft.iloc[0]) else None
    return pd.DataFrame([_row(t, prim, ref, full_ft_s, benchmarks).record() for _, t in timings.iterrows()])


def _row(t: pd.Series, prim: pd.DataFrame, ref: dict, full_ft_s: float | None,
         benchmarks: Sequence[str]) -> LeaderboardRow:
    vals = prim[(prim["selector"] == t["selector"]) & (prim["budget"] == t["budget"])
                & (prim["seed"] == t["seed"])].set_index("benchmark")["value"].to_dict()
    values = {b: _num(vals.get(b)) for b in benchmarks}
    is_ref = t["selector"] == REFERENCE
    sel_s, ft_s = _num(t.get("selection_s")), _num(t.get("finetune_s"))
    gpu = [_num(t.get(f"{s}_gpu_s")) for s in ("score", "select", "finetune")]
    return LeaderboardRow(
        selector=t["selector"], budget=t["budget"], seed=int(t["seed"]), status=t["status"],
        reason=t.get("reason"), arp=arp(values, ref, benchmarks), values=values,
        relative={b: relative_performance(values[b], ref.get(b)) for b in benchmarks},
        osc=None if is_ref else osc(sel_s if t["status"] == "done" else None, ft_s, full_ft_s),
        selection_s=None if is_ref else sel_s,
        parts={p: None if is_ref else _num(t.get(f"{p}_s")) for p in SELECTION_PARTS},
        finetune_s=ft_s, gpu_hours=sum(g for g in gpu if g is not None) / 3600.0, device=t.get("device"),
        lineage={c: t.get(c) for c in LINEAGE_COLUMNS})


def _num(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)
