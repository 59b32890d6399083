"""What a reader must know before trusting the report's numbers: which cells are missing and why (the stage, the
benchmark, the message), the cell counts by status, and the benchmarks that cannot separate selectors — every cell
ties, or the full-data reference sits at a constant answer (relative performance against it means little)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from selbench.evaluators.relative import ARP_VERSION
from selbench.leaderboard import REFERENCE
from selbench.reports.tables import RunData

STAGES = ("prepare", "score", "select", "finetune", "evaluate")
_STAGE_PREFIX = re.compile(rf"^({'|'.join(STAGES)})\b\s*[:—-]\s*")


NO_REASON = {"missing": "never ran: no job of the cell failed (an interrupted run, or a cell added since)",
             "blocked": "an upstream job failed"}


@dataclass
class Problem:
    selector: str
    budget: str
    seed: int
    status: str  # the cell's status: failed / blocked / missing, or done (a column is N/A)
    stage: str  # where it went wrong ("—" when unknown)
    benchmarks: str  # the columns it costs ("all" for a cell without results)
    message: str

    @property
    def cell(self) -> str:
        return f"{self.selector} @ {self.budget}"


@dataclass
class Flag:
    column: str  # the column's key
    label: str
    message: str


def counts(run: RunData) -> dict[str, int]:
    """Selector cells (every seed counts) by status, plus ``incomplete``: done cells whose ARP is N/A."""
    board = run.board
    if board.empty:
        return dict.fromkeys(("cells", "done", "failed", "blocked", "missing", "incomplete"), 0)
    cells = board[board["selector"] != REFERENCE]
    out = {"cells": len(cells)}
    for status in ("done", "failed", "blocked", "missing"):
        out[status] = int((cells["status"] == status).sum())
    out["incomplete"] = int(((cells["status"] == "done") & cells[ARP_VERSION].isna()).sum())
    return out


def failed_stage(row: pd.Series) -> str:
    """The stage a cell stopped at: named by its reason (``finetune: …``), else the first of its jobs that
    recorded no timing."""
    reason = row.get("reason")
    if isinstance(reason, str):
        m = _STAGE_PREFIX.match(reason)
        if m:
            return m.group(1)
    for stage in STAGES[1:]:
        job = row.get(f"{stage}_job")
        if isinstance(job, str) and job and _missing(row.get(f"{stage}_wall_s")):
            return stage
    return "—"


def problems(run: RunData) -> list[Problem]:
    """Every cell (the reference included) that is not done, and every N/A column of a done cell, with why (a
    column the reference has no usable value for is said once: by the reference's row, or its flag)."""
    board = run.board
    out: list[Problem] = []
    if board.empty:
        return out
    timings = run.timings.set_index(["selector", "budget", "seed"]) if not run.timings.empty else None
    ref = board[board["selector"] == REFERENCE]
    ref_row = ref.iloc[0] if len(ref) else None
    for _, r in board.iterrows():
        key = (r["selector"], r["budget"], int(r["seed"]))
        full = r
        if timings is not None and key in timings.index:
            t = timings.loc[key]
            t = t.iloc[0] if isinstance(t, pd.DataFrame) else t
            full = pd.concat([t, r])  # the timings' wall seconds next to the board's row
            full = full[~full.index.duplicated(keep="last")]
        if r["status"] != "done":
            reason = r.get("reason")
            message = (_STAGE_PREFIX.sub("", reason) if isinstance(reason, str) and reason
                       else NO_REASON.get(str(r["status"]), str(r["status"])))
            out.append(Problem(*key, str(r["status"]), failed_stage(full), "all", message))
            continue
        for c in run.columns:
            if not _missing(r.get(f"rel_{c.key}")):
                continue
            if _missing(r.get(c.key)):
                why = f"the evaluation recorded no {run.column_name(c)} value"
            elif ref_row is None or _missing(ref_row.get(c.key)) or ref_row.get(c.key) == 0:
                continue  # the reference's own row (or its flag) says it once, not every cell
            else:
                why = "relative performance is undefined"
            out.append(Problem(*key, "done", "evaluate", run.column_name(c), why))
    return out


def flags(run: RunData, items: pd.DataFrame | None = None) -> list[Flag]:
    """Columns that cannot separate the selectors: every selector cell (and the reference) has the same value, or
    the reference scores 0, or (from per-item outcomes) the reference gives one answer class on every item."""
    board = run.board
    out: list[Flag] = []
    if board.empty:
        return out
    ref = board[board["selector"] == REFERENCE]
    cells = board[(board["selector"] != REFERENCE) & (board["status"] == "done")]
    for c in run.columns:
        name = run.column_name(c)
        vals = [float(v) for v in cells.get(c.key, pd.Series(dtype=float)).dropna()]
        ref_vals = [float(v) for v in ref.get(c.key, pd.Series(dtype=float)).dropna()]
        constant = None
        if items is not None:  # a column averaged over several benchmarks is constant when all of them are
            found = [_constant_reference(items, s.benchmark) for s in c.sources]
            constant = found[0] if all(found) else None
        if ref_vals and ref_vals[0] == 0:
            out.append(Flag(c.key, name, f"the full-data reference scores 0 on {name} (an untuned model or a "
                                         "constant answer): relative performance is undefined"))
        elif constant:
            out.append(Flag(c.key, name, f"the full-data reference {constant} on {name}: "
                                         "it does not separate selectors"))
        elif len(vals) >= 2 and np.allclose(vals, vals[0], rtol=0, atol=1e-12):
            same = " as the reference" if ref_vals and math.isclose(ref_vals[0], vals[0], abs_tol=1e-12) else ""
            score = f"{vals[0] * c.display_factor:.4g}"  # as the tables print it (× 100 for 0–1 metrics)
            out.append(Flag(c.key, name, f"every cell scores {score} on {name}{same}: all cells tie "
                                         "(often a constant answer)"))
    return out


def _pope_answers(kind: str, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per item, whether the answer was yes and whether it was no, from either POPE layout (None for others)."""
    if kind == "pope" and stats.shape[1] == 4:  # [tp, fp, fn, tn] under POPE's rule: every answer is yes or no
        return stats[:, 0] + stats[:, 1], stats[:, 2] + stats[:, 3]
    if kind == "pope_lmms" and stats.shape[1] == 6:  # [tp, fp, fn, correct, gold yes, 1]: no = fn + (correct - tp)
        return stats[:, 0] + stats[:, 1], stats[:, 2] + stats[:, 3] - stats[:, 0]
    return None


def _constant_reference(items: pd.DataFrame, benchmark: str) -> str | None:
    """How the reference's per-item outcomes on ``benchmark`` are constant, if they are."""
    mine = items[(items["selector"] == REFERENCE) & (items["benchmark"] == benchmark)]
    if mine.empty:
        return None
    kind = mine["kind"].iloc[0]
    stats = np.array([np.asarray(s, dtype=np.float64) for s in mine["stats"]])
    answered = _pope_answers(kind, stats)
    if answered is not None and len(stats) > 1:
        for word, count in zip(("yes", "no"), answered):
            if count.sum() == len(stats):
                return f"answers {word} on every item"
    if kind == "mean" and stats.shape[1] == 2 and len(stats) > 1 and np.all(stats[:, 0] == stats[0, 0]):
        return f"scores {stats[0, 0]:g} on every item"
    return None


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
