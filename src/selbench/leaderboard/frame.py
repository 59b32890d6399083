"""The leaderboard frame: one row per (selector, budget, seed) with its status, ARP (``arp_v1``), each protocol
column's value and relative performance, OSC (``osc_v1``), the selection-time parts, GPU hours, device and
lineage ids — built from the harness's results and timings tables and the protocol's columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from selbench.evaluators.protocols import Column
from selbench.evaluators.relative import ARP_VERSION, OSC_VERSION, arp, osc, relative_performance
from selbench.pool.sanity import ANTI_ORACLE, ORACLE

REFERENCE = "full"  # the full-data reference's selector label: a reserved name, never a selector's
REFERENCE_BUDGET = "100%"
UNTUNED = "untuned"  # the target evaluated as it is, before any instruction tuning (spec ``references``)
UNTUNED_BUDGET = "0%"
# Sanity references (spec ``references``): rows shown beside the selectors, never ranked with them. Reserved labels.
SANITY = (ORACLE, ANTI_ORACLE, UNTUNED)
Role = Literal["reference", "sanity", "selector"]
CellStatus = Literal["done", "failed", "blocked", "missing"]  # per cell, from its evaluate job and upstream jobs
SELECTION_PARTS = ("feature_extraction", "proxy_training", "scoring", "selection")
LINEAGE_COLUMNS = ("spec_hash", "prepare_job", "score_job", "select_job", "finetune_job", "evaluate_job",
                   "commit", "selbench", "torch", "transformers")


@dataclass
class LeaderboardRow:
    """One cell of the leaderboard. ``record()`` flattens it into the frame's columns: each protocol column's
    value under its key and its relative performance under ``rel_<key>``."""

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
        row: dict[str, Any] = {"selector": self.selector, "role": role(self.selector), "budget": self.budget,
                               "seed": self.seed, "status": self.status, "reason": self.reason, ARP_VERSION: self.arp}
        row.update(self.values)
        row.update({f"rel_{b}": v for b, v in self.relative.items()})
        row[OSC_VERSION] = self.osc
        row["selection_s"] = self.selection_s
        row.update({f"{p}_s": v for p, v in self.parts.items()})
        row.update(finetune_s=self.finetune_s, gpu_hours=self.gpu_hours, device=self.device)
        row.update({c: self.lineage.get(c) for c in LINEAGE_COLUMNS})
        return row


CellKey = tuple[str, str, int]  # (selector, budget, seed)


def role(selector: str) -> Role:
    """What a leaderboard row is: the full-data reference, a sanity reference (oracle, anti-oracle, untuned) or a
    selector."""
    return "reference" if selector == REFERENCE else "sanity" if selector in SANITY else "selector"


def leaderboard(results: pd.DataFrame, timings: pd.DataFrame, columns: Sequence[Column]) -> pd.DataFrame:
    """The frame of ``LeaderboardRow.record()`` rows, in the timings' cell order (the reference first)."""
    if timings.empty:
        return pd.DataFrame()
    measured = _measured(results)
    refs = [k for k in measured if k[0] == REFERENCE]
    if len(refs) > 1:
        raise ValueError("the results hold more than one full-data reference")
    ref = {c.key: c.value(measured[refs[0]]) for c in columns} if refs else {}
    full_ft = timings.loc[timings["selector"] == REFERENCE, "finetune_s"]
    full_ft_s = float(full_ft.iloc[0]) if len(full_ft) and pd.notna(full_ft.iloc[0]) else None
    return pd.DataFrame([_row(t, measured, ref, full_ft_s, columns).record() for _, t in timings.iterrows()])


def _measured(results: pd.DataFrame) -> dict[CellKey, dict[tuple[str, str], float | None]]:
    """Per cell, every (benchmark, metric) value the evaluation recorded."""
    out: dict[CellKey, dict[tuple[str, str], float | None]] = {}
    if results.empty:
        return out
    for sel, budget, seed, bench, metric, value in results[["selector", "budget", "seed", "benchmark", "metric",
                                                           "value"]].itertuples(index=False):
        vals = out.setdefault((sel, budget, int(seed)), {})
        if (bench, metric) in vals:
            raise ValueError(f"the results hold {bench}/{metric} twice for {sel} @ {budget} seed {seed}")
        vals[(bench, metric)] = _num(value)
    return out


def _row(t: pd.Series, measured: dict[CellKey, dict[tuple[str, str], float | None]], ref: dict[str, float | None],
         full_ft_s: float | None, columns: Sequence[Column]) -> LeaderboardRow:
    have = measured.get((t["selector"], t["budget"], int(t["seed"])), {})
    values = {c.key: c.value(have) for c in columns}
    relative = {c.key: relative_performance(values[c.key], ref.get(c.key)) if c.higher_is_better
                else relative_performance(ref.get(c.key), values[c.key]) for c in columns}
    is_ref = t["selector"] == REFERENCE or t["selector"] in SANITY  # not a selection method: no OSC, no selection time
    sel_s, ft_s = _num(t.get("selection_s")), _num(t.get("finetune_s"))
    gpu = [_num(t.get(f"{s}_gpu_s")) for s in ("score", "select", "finetune")]
    return LeaderboardRow(
        selector=t["selector"], budget=t["budget"], seed=int(t["seed"]), status=t["status"],
        reason=t.get("reason"), arp=arp(relative), values=values, relative=relative,
        osc=None if is_ref else osc(sel_s if t["status"] == "done" else None, ft_s, full_ft_s),
        selection_s=None if is_ref else sel_s,
        parts={p: None if is_ref else _num(t.get(f"{p}_s")) for p in SELECTION_PARTS},
        finetune_s=ft_s, gpu_hours=sum(g for g in gpu if g is not None) / 3600.0, device=t.get("device"),
        lineage={c: t.get(c) for c in LINEAGE_COLUMNS})


def _num(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)
