"""The report's figures (matplotlib, Agg): ARP vs budget per selector (XMAS Fig. 1 style), ARP vs OSC with the
Pareto front, the per-benchmark relative-performance heatmap and the time breakdown. Each is written as PNG and
SVG; the HTML inlines the SVG, so the page needs nothing but itself.

Every selector keeps one colour and one marker in every figure (``selector_styles``: Okabe & Ito's colour-blind-safe
palette, then Paul Tol's "muted" set); the artists that draw a selector carry the SVG id ``sel<i>-…`` (i: the
selector's position in the spec), so the page and its test can tell which shapes belong to whom. The sanity subsets
(oracle, anti-oracle) come after the selectors, in grey tones and dashed lines, and stay out of every cost figure and
Pareto front; the untuned target is a dotted line at its ARP. Labels are drawn as glyph paths, never as SVG text: a
label is user input, and the SVG goes into the page as markup."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import Normalize, to_rgb  # noqa: E402

from selbench.evaluators.relative import ARP_VERSION, OSC_VERSION  # noqa: E402
from selbench.leaderboard import REFERENCE, UNTUNED  # noqa: E402
from selbench.reports.tables import (  # noqa: E402
    RunData,
    aggregate,
    budget_fraction,
    budgets_in_order,
    ranked_in_order,
    sanity_in_order,
    selectors_in_order,
)

matplotlib.rcParams.update({"svg.fonttype": "path", "svg.hashsalt": "selbench"})  # glyphs as paths; stable ids

# Okabe & Ito (2008) without black and yellow (the reference is black; yellow is faint on white), then Paul Tol's
# "muted" scheme, then yellow: all distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#332288", "#999933", "#882255",
           "#44AA99", "#CC6677", "#117733", "#AA4499", "#88CCEE", "#DDCC77", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*"]
REFERENCE_COLOUR = "#222222"
# the sanity subsets (oracle, anti-oracle): greys, so no selector's colour is spent on a reference
SANITY_COLOURS = ["#555555", "#9a9a9a"]
SANITY_MARKERS = ["d", "X"]
UNTUNED_COLOUR = "#777777"


@dataclass(frozen=True)
class Style:
    index: int  # the selector's position in the spec: its SVG ids are ``sel<index>-…``
    colour: str
    marker: str
    sanity: bool = False  # a sanity reference: dashed, and never in a cost figure


def selector_styles(selectors: Sequence[str]) -> dict[str, Style]:
    """One colour and marker per selector, by its position (the same run always gets the same colours)."""
    return {s: Style(i, PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)]) for i, s in enumerate(selectors)}


def styles(run: RunData) -> dict[str, Style]:
    """The selectors' styles, then the sanity subsets' (greys; their indices follow the selectors')."""
    out = selector_styles(ranked_in_order(run))
    for k, s in enumerate(sanity_in_order(run)):
        out[s] = Style(len(out), SANITY_COLOURS[k % len(SANITY_COLOURS)], SANITY_MARKERS[k % len(SANITY_MARKERS)],
                       sanity=True)
    return out


def ranked_styles(run: RunData) -> dict[str, Style]:
    """The selectors' styles alone: for what only selectors have (selection cost, OSC, a Pareto front)."""
    return {s: st for s, st in styles(run).items() if not st.sanity}


def _tag(artists, style: Style, what: str) -> None:
    """Give each artist the SVG id ``sel<i>-<what><k>`` (unique within its figure)."""
    for k, a in enumerate(artists if isinstance(artists, (list, tuple)) else [artists]):
        a.set_gid(f"sel{style.index}-{what}{k}")


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
    fig.savefig(svg, bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return Figure(key, title, caption, png, svg)


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} yet", ha="center", va="center", transform=ax.transAxes, color="0.4")


def _cells(run: RunData, sanity: bool = True):
    """(selector, budget, rows) for every selector × budget, in display order (``sanity``: the sanity subsets
    too)."""
    board = run.board
    for sel in selectors_in_order(run) if sanity else ranked_in_order(run):
        for b in budgets_in_order(run):
            yield sel, b, board[(board["selector"] == sel) & (board["budget"] == b)]


def _legend(ax) -> None:
    """The legend outside the axes, on the right (seven selectors would cover the data)."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _swatches(ax, run: RunData, labels: list[tuple[str, str]]) -> None:
    """A marker in the selector's colour just left of the axes before each row label (rows ``(selector, budget)``
    at y = 0, 1, …); the label text stays dark, as a light colour would not read."""
    for sel, st in styles(run).items():
        ys = [i for i, (s, _) in enumerate(labels) if s == sel]
        if ys:
            (line,) = ax.plot([-0.018] * len(ys), ys, ls="none", marker=st.marker, color=st.colour, ms=5.5,
                              clip_on=False, zorder=4, transform=ax.get_yaxis_transform())
            _tag(line, st, "swatch")
    ax.tick_params(axis="y", length=0, pad=13)


def arp_vs_budget(run: RunData, out: Path) -> Figure:
    budgets = budgets_in_order(run)
    n_pool = (run.spec.get("world") or {}).get("samples")
    fractions = [budget_fraction(b, n_pool) for b in budgets]
    numeric = all(x is not None for x in fractions)
    xs = [100.0 * (x or 0.0) for x in fractions] if numeric else [float(i) for i in range(len(budgets))]
    span = (max(xs) - min(xs)) if len(xs) > 1 else 1.0
    sels = styles(run)
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    plotted, gaps = False, []
    for sel, st in sels.items():
        y, low, high = [], [], []
        for b in budgets:
            rows = run.board[(run.board["selector"] == sel) & (run.board["budget"] == b)]
            a = aggregate(rows, ARP_VERSION)
            if a.mean is None:  # NaN breaks the line: a missing cell is a gap, never bridged
                y += [math.nan]
                low += [math.nan]
                high += [math.nan]
                if len(rows):
                    gaps.append(f"{run.selector_name(sel)} @ {b}")
                continue
            lo, hi = _ci(run, sel, b) or (a.mean - (a.std or 0.0), a.mean + (a.std or 0.0))
            y += [a.mean]
            low += [a.mean - lo]
            high += [hi - a.mean]
        if all(math.isnan(v) for v in y):
            continue
        dodge = (st.index - (len(sels) - 1) / 2) * 0.012 * span  # side by side, so error bars do not overlap
        line, caps, bars = ax.errorbar([x + dodge for x in xs], y, yerr=[low, high], marker=st.marker,
                                       color=st.colour, capsize=3, lw=1.6, ms=5, ls="--" if st.sanity else "-",
                                       label=text(run.selector_name(sel)))
        _tag(line, st, "line")
        _tag(list(caps), st, "cap")
        _tag(list(bars), st, "bar")
        plotted = True
    ref = ax.axhline(100.0, color=REFERENCE_COLOUR, ls="--", lw=1, label="full data (100)")
    ref.set_gid("reference-line")
    untuned = aggregate(run.board[run.board["selector"] == UNTUNED], ARP_VERSION).mean
    if untuned is not None:
        ax.axhline(untuned, color=UNTUNED_COLOUR, ls=":", lw=1.4,
                   label=f"untuned ({untuned:.{run.decimals}f})").set_gid("untuned-line")
    ax.set_xticks(xs, [text(b) for b in budgets])
    ax.set_xlabel("budget (share of the pool)" if numeric else "budget")
    ax.set_ylabel(f"ARP ({ARP_VERSION})")
    ax.grid(alpha=0.3)
    if plotted:
        _legend(ax)
    else:
        _no_data(ax, "ARP")
    bars_are = (f"{run.intervals.confidence * 100:g} % bootstrap CI" if run.intervals is not None
                else "std over seeds")
    missing = f" Gaps: {', '.join(gaps)} (see Problems)." if gaps else ""
    sanity = (" Grey dashed lines: sanity references (subsets chosen with the world's ground truth), not "
              "selectors." if any(st.sanity for st in sels.values()) else "")
    floor = " The dotted line is the untuned target (no fine-tuning)." if untuned is not None else ""
    return _figure(fig, out, "arp_vs_budget", "ARP vs budget",
                   f"ARP per selector and budget (error bars: {bars_are}); the dashed line is the full-data "
                   f"reference (100). A missing cell leaves a gap in its selector's line.{missing}{sanity}{floor}")


def _ci(run: RunData, selector: str, budget: str) -> tuple[float, float] | None:
    """The cell's bootstrap CI of ARP, where the run has one."""
    row = run.intervals.cell(selector, budget) if run.intervals is not None else None
    if row is None or pd.isna(row["arp_low"]):
        return None
    return float(row["arp_low"]), float(row["arp_high"])


def arp_vs_osc(run: RunData, out: Path) -> Figure:
    pts: list[tuple[float, float]] = []
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for sel, st in ranked_styles(run).items():  # the sanity references cost nothing worth comparing
        mine = []
        for b in budgets_in_order(run):
            rows = run.board[(run.board["selector"] == sel) & (run.board["budget"] == b)]
            a, o = aggregate(rows, ARP_VERSION), aggregate(rows, OSC_VERSION)
            if a.mean is not None and o.mean is not None:
                mine.append((o.mean, a.mean, b))
        if not mine:
            continue
        sc = ax.scatter([p[0] for p in mine], [p[1] for p in mine], s=30, color=st.colour, marker=st.marker,
                        zorder=3, label=text(run.selector_name(sel)))
        _tag(sc, st, "points")
        for x, y, b in mine:
            ax.annotate(text(b), (x, y), fontsize=6.5, xytext=(4, 3), textcoords="offset points", color="0.35")
        pts += [(x, y) for x, y, _ in mine]
    if pts:
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color=REFERENCE_COLOUR, lw=1.2,
                drawstyle="steps-post", label="Pareto front", zorder=2)
        ax.scatter([1.0], [100.0], marker="*", s=90, color=REFERENCE_COLOUR, zorder=3, label="full data")
        _legend(ax)
    else:
        _no_data(ax, "cells with both ARP and OSC")
    ax.axhline(100.0, color=REFERENCE_COLOUR, ls="--", lw=1)
    ax.axvline(1.0, color="0.6", ls=":", lw=1)
    ax.set_xlabel(f"OSC ({OSC_VERSION}): (selection + subset fine-tuning) / full fine-tuning")
    ax.set_ylabel(f"ARP ({ARP_VERSION})")
    ax.grid(alpha=0.3)
    return _figure(fig, out, "arp_vs_osc", "ARP vs OSC",
                   "Each point is a selector at a budget (labelled with the budget); the black step line is the "
                   "Pareto front (no other cell has both a lower OSC and a higher ARP); the star is the full-data "
                   "reference (OSC 1, ARP 100). OSC < 1 (dotted) is cheaper than fine-tuning on everything.")


def heatmap(run: RunData, out: Path, flagged: Sequence[str] = ()) -> Figure:
    """Relative performance per (selector @ budget) × column, on a diverging scale centred at 100 (the full-data
    reference): blue above, red below. ``flagged``: column keys marked * (they cannot separate selectors)."""
    rows, labels = [], []
    for sel, b, part in _cells(run):
        rows.append([aggregate(part, f"rel_{c.key}").mean for c in run.columns])
        labels.append((sel, b))
    fig, ax = plt.subplots(figsize=(1.0 * len(run.columns) + 3.6, 0.3 * max(len(rows), 1) + 1.8))
    if rows:
        data = np.array([[math.nan if v is None else v for v in r] for r in rows], dtype=float)
        finite = data[np.isfinite(data)]
        reach = max(10.0, math.ceil(float(np.abs(finite - 100.0).max()) / 5.0) * 5.0) if finite.size else 10.0
        norm = Normalize(100.0 - reach, 100.0 + reach)
        cmap = plt.get_cmap("RdBu").with_extremes(bad="#eeeeee")
        im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, norm=norm, aspect="auto")
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                v = data[i, j]
                if math.isnan(v):
                    ax.text(j, i, "N/A", ha="center", va="center", fontsize=7, color="0.45")
                else:
                    r, g, bl = to_rgb(cmap(norm(v)))
                    dark = 0.2126 * r + 0.7152 * g + 0.0722 * bl < 0.5  # white numbers on dark cells
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
                            color="white" if dark else "#1b1b1b")
        ax.set_yticks(range(len(labels)), [text(f"{run.selector_name(s)} @ {b}") for s, b in labels], fontsize=7.5)
        ax.set_xticks(range(len(run.columns)), [text(run.column_name(c)) + (" *" if c.key in flagged else "")
                                                for c in run.columns], fontsize=8, rotation=30, ha="right")
        _swatches(ax, run, labels)
        fig.colorbar(im, ax=ax, label="relative performance (% of full data; 100 = full data)")
    else:
        _no_data(ax, "cells")
    note = " * flagged: this column cannot separate selectors (see Problems)." if flagged else ""
    return _figure(fig, out, "heatmap", "Relative performance per benchmark",
                   "Value / full-data value × 100 per benchmark (mean over seeds), coloured on a scale centred at "
                   f"100: blue above the full-data reference, red below; grey N/A where a value is missing.{note}")


def time_breakdown(run: RunData, out: Path) -> Figure:
    labels: list[tuple[str, str]] = []
    stacks: list[list[float]] = []
    missing: dict[int, str] = {}
    for sel, b, part in _cells(run, sanity=False):
        if part.empty:
            continue
        vals = [aggregate(part, col).mean for col, _ in PARTS]
        total, ft = aggregate(part, "selection_s").mean, aggregate(part, "finetune_s").mean
        labels.append((sel, b))
        if total is None or ft is None or any(v is None for v in vals):
            stacks.append([0.0] * (len(PARTS) + 2))
            bad = part[part["status"] != "done"]
            missing[len(labels) - 1] = str(bad["status"].iloc[0]) if len(bad) else "not timed"
            continue
        spent = [v for v in vals if v is not None]  # all of them, after the check above
        stacks.append([*spent, max(total - sum(spent), 0.0), ft])
    fig, ax = plt.subplots(figsize=(7.6, 0.3 * max(len(labels), 1) + 1.9))
    names = [n for _, n in PARTS] + ["other selection (loading, ranking)", "subset fine-tuning"]
    # greys and one hatch: the selectors own the colours
    shades = [("#3b3b3b", ""), ("#6e6e6e", ""), ("#9c9c9c", ""), ("#c9c9c9", ""), ("#ffffff", "///")]
    if labels:
        left = [0.0] * len(stacks)
        for k, name in enumerate(names):
            width = [s[k] for s in stacks]
            colour, hatch = shades[k]
            ax.barh(range(len(stacks)), width, left=left, color=colour, hatch=hatch, edgecolor="#555555",
                    lw=0.4, label=name)
            left = [a + w for a, w in zip(left, width)]
        for i, status in missing.items():
            ax.text(0.01, i, f"no timing ({status})", transform=ax.get_yaxis_transform(), va="center",
                    fontsize=7, color="#a33")
        ax.set_yticks(range(len(labels)), [text(f"{run.selector_name(s)} @ {b}") for s, b in labels], fontsize=7.5)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        _swatches(ax, run, labels)
        ref = aggregate(run.board[run.board["selector"] == REFERENCE], "finetune_s").mean
        if ref is not None:
            ax.axvline(ref, color=REFERENCE_COLOUR, ls="--", lw=1, label="full fine-tuning")
        _legend(ax)
    else:
        _no_data(ax, "timed cells")
    devices = sorted({str(d) for d in run.board.get("device", pd.Series(dtype=object)).dropna()})
    ax.set_xlabel("wall seconds" + (f" on {text(devices[0])}" if len(devices) == 1 else ""))
    return _figure(fig, out, "time_breakdown", "Time breakdown",
                   "Selection (feature extraction, proxy training, scoring, the rest of the selector's jobs) and "
                   "subset fine-tuning per cell; the dashed line is full-data fine-tuning. Wall seconds are "
                   "device-bound: compare them only within one machine.")


def all_figures(run: RunData, out: Path, flagged: Sequence[str] = ()) -> list[Figure]:
    return [arp_vs_budget(run, out), arp_vs_osc(run, out), heatmap(run, out, flagged), time_breakdown(run, out)]
