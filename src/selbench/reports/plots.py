"""The report's figures (matplotlib, Agg): ARP vs budget per selector (XMAS Fig. 1 style), ARP vs OSC with the
Pareto front, the per-benchmark relative-performance heatmap and the time breakdown. Each is written as PNG and
SVG; the HTML embeds the PNG, so the page needs nothing but itself."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from selbench.evaluators.relative import ARP_VERSION, OSC_VERSION  # noqa: E402
from selbench.leaderboard import REFERENCE  # noqa: E402
from selbench.reports.tables import (  # noqa: E402
    RunData,
    aggregate,
    budget_fraction,
    budgets_in_order,
    selectors_in_order,
)

PARTS = [("feature_extraction_s", "feature extraction"), ("proxy_training_s", "proxy training"),
         ("scoring_s", "scoring")]


@dataclass
class Figure:
    key: str
    title: str
    caption: str
    png: Path
    svg: Path


def text(label: str) -> str:
    """A label as matplotlib should print it literally: ``$`` would start mathtext, a leading ``_`` hides a
    legend entry."""
    label = label.replace("$", r"\$")
    return "\u200b" + label if label.startswith("_") else label


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower OSC, higher ARP), by increasing OSC."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _figure(fig, out: Path, key: str, title: str, caption: str) -> Figure:
    """Write ``fig`` as PNG and SVG under ``out`` and close it."""
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{key}.png", out / f"{key}.svg"
    fig.savefig(png, dpi=110, bbox_inches="tight")
    fig.savefig(svg, bbox_inches="tight")
    plt.close(fig)
    return Figure(key, title, caption, png, svg)


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} yet", ha="center", va="center", transform=ax.transAxes, color="0.4")


def _cells(run: RunData):
    """(selector, budget, rows) for every selector × budget, in display order."""
    board = run.board
    for sel in selectors_in_order(run):
        for b in budgets_in_order(run):
            yield sel, b, board[(board["selector"] == sel) & (board["budget"] == b)]


def arp_vs_budget(run: RunData, out: Path) -> Figure:
    budgets = budgets_in_order(run)
    n_pool = (run.spec.get("world") or {}).get("samples")
    fractions = [budget_fraction(b, n_pool) for b in budgets]
    numeric = all(x is not None for x in fractions)
    xs = [x or 0.0 for x in fractions]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    plotted = False
    for sel in selectors_in_order(run):
        pts = []
        for i, b in enumerate(budgets):
            a = aggregate(run.board[(run.board["selector"] == sel) & (run.board["budget"] == b)], ARP_VERSION)
            if a.mean is not None:
                low, high = _ci(run, sel, b) or (a.mean - (a.std or 0.0), a.mean + (a.std or 0.0))
                pts.append(((xs[i] * 100) if numeric else i, a.mean, a.mean - low, high - a.mean))
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[[p[2] for p in pts], [p[3] for p in pts]],
                        marker="o", capsize=3, label=text(sel))
            plotted = True
    ax.axhline(100.0, color="0.3", ls="--", lw=1, label="full data (100)")
    ax.set_xlabel("budget (% of the pool)" if numeric else "budget")
    if not numeric:
        ax.set_xticks(range(len(budgets)), [text(b) for b in budgets])
    ax.set_ylabel(f"ARP ({ARP_VERSION})")
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(fontsize=8, loc="best")
    else:
        _no_data(ax, "ARP")
    bars = (f"{run.intervals.confidence * 100:g} % bootstrap CI" if run.intervals is not None
            else "std over seeds")
    return _figure(fig, out, "arp_vs_budget", "ARP vs budget",
                   f"ARP per selector and budget (error bars: {bars}); "
                   "the dashed line is the full-data reference.")


def _ci(run: RunData, selector: str, budget: str) -> tuple[float, float] | None:
    """The cell's bootstrap CI of ARP, where the run has one."""
    row = run.intervals.cell(selector, budget) if run.intervals is not None else None
    if row is None or pd.isna(row["arp_low"]):
        return None
    return float(row["arp_low"]), float(row["arp_high"])


def arp_vs_osc(run: RunData, out: Path) -> Figure:
    pts, labels = [], []
    for sel, b, rows in _cells(run):
        a, o = aggregate(rows, ARP_VERSION), aggregate(rows, OSC_VERSION)
        if a.mean is not None and o.mean is not None:
            pts.append((o.mean, a.mean))
            labels.append(f"{sel} @ {b}")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if pts:
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, color="tab:blue", zorder=3)
        for (x, y), lab in zip(pts, labels):
            ax.annotate(text(lab), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color="tab:red", lw=1.5,
                drawstyle="steps-post", label="Pareto front", zorder=2)
        ax.legend(fontsize=8, loc="lower right")
    else:
        _no_data(ax, "cells with both ARP and OSC")
    ax.axhline(100.0, color="0.3", ls="--", lw=1)
    ax.axvline(1.0, color="0.6", ls=":", lw=1)
    ax.set_xlabel(f"OSC ({OSC_VERSION}): (selection + subset fine-tuning) / full fine-tuning")
    ax.set_ylabel(f"ARP ({ARP_VERSION})")
    ax.grid(alpha=0.3)
    return _figure(fig, out, "arp_vs_osc", "ARP vs OSC",
                   "Each point is a selector at a budget; the red line is the Pareto "
                   "front (no other cell has both a lower OSC and a higher ARP). OSC < 1 (dotted) is cheaper than "
                   "fine-tuning on everything.")


def heatmap(run: RunData, out: Path) -> Figure:
    rows, labels = [], []
    for sel, b, part in _cells(run):
        rows.append([aggregate(part, f"rel_{c.key}").mean for c in run.columns])
        labels.append(f"{sel} @ {b}")
    fig, ax = plt.subplots(figsize=(1.1 * len(run.columns) + 3.0, 0.32 * max(len(rows), 1) + 1.6))
    if rows:
        import numpy as np

        data = np.array([[math.nan if v is None else v for v in r] for r in rows], dtype=float)
        im = ax.imshow(np.ma.masked_invalid(data), cmap="RdYlGn", vmin=0, vmax=max(120.0, np.nanmax(data)
                       if np.isfinite(data).any() else 120.0), aspect="auto")
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                ax.text(j, i, "N/A" if math.isnan(data[i, j]) else f"{data[i, j]:.0f}", ha="center",
                        va="center", fontsize=7)
        ax.set_yticks(range(len(labels)), [text(lab) for lab in labels], fontsize=7)
        ax.set_xticks(range(len(run.columns)), [text(c.label) for c in run.columns], fontsize=8, rotation=30,
                      ha="right")
        fig.colorbar(im, ax=ax, label="relative performance (% of full data)")
    else:
        _no_data(ax, "cells")
    return _figure(fig, out, "heatmap", "Relative performance per benchmark",
                   "Value / full-data value × 100 per benchmark "
                   "(mean over seeds); grey N/A where a benchmark is missing.")


def time_breakdown(run: RunData, out: Path) -> Figure:
    labels, stacks = [], []
    for sel, b, part in _cells(run):
        vals = [aggregate(part, col).mean for col, _ in PARTS]
        total, ft = aggregate(part, "selection_s").mean, aggregate(part, "finetune_s").mean
        if total is None or ft is None or any(v is None for v in vals):
            continue
        other = max(total - sum(vals), 0.0)  # type: ignore[arg-type]
        stacks.append([*vals, other, ft])
        labels.append(f"{sel} @ {b}")
    fig, ax = plt.subplots(figsize=(7.0, 0.3 * max(len(labels), 1) + 1.8))
    names = [n for _, n in PARTS] + ["other selection (loading, ranking)", "subset fine-tuning"]
    colors = ["tab:purple", "tab:orange", "tab:green", "tab:gray", "tab:blue"]
    if stacks:
        left = [0.0] * len(stacks)
        for k, name in enumerate(names):
            width = [s[k] for s in stacks]
            ax.barh(range(len(stacks)), width, left=left, color=colors[k], label=name)
            left = [a + w for a, w in zip(left, width)]
        ax.set_yticks(range(len(labels)), [text(lab) for lab in labels], fontsize=7)
        ax.invert_yaxis()
        ref = aggregate(run.board[run.board["selector"] == REFERENCE], "finetune_s").mean
        if ref is not None:
            ax.axvline(ref, color="k", ls="--", lw=1, label="full fine-tuning")
        ax.legend(fontsize=7, loc="lower right")
    else:
        _no_data(ax, "timed cells")
    ax.set_xlabel("wall seconds")
    return _figure(fig, out, "time_breakdown", "Time breakdown",
                   "Selection (feature extraction, proxy training, scoring, the "
                   "rest of the selector's jobs) and subset fine-tuning per cell; the dashed line is full-data "
                   "fine-tuning.")


def all_figures(run: RunData, out: Path) -> list[Figure]:
    return [arp_vs_budget(run, out), arp_vs_osc(run, out), heatmap(run, out), time_breakdown(run, out)]
