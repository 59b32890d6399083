"""Render a run's report folder: ``index.html`` (CSS, script and plots inline), ``cards.html`` (what each selector
picked), ``plots/*.png|svg``, ``tables/*.tex|md|csv``, ``data/`` (the leaderboard, results, timings and cards as
CSV / JSON / parquet) and ``jobs/<id>/meta.json`` (copies of the lineage the page links to). Every link is relative
and stays inside the folder, so the folder works wherever it is copied. jinja2 with autoescape on: labels are user
input.

The tables come from ``tables.py`` (every format shows the same numbers); this module adds what only a page has:
anchors and links (an ARP cell → its per-benchmark row and its cell card), sort values, the budget each row or
column belongs to (for the budget filter), the selector's colour, a compact view of the time and lineage tables
(a column with one value on every row is said once above the table), and the sanity references' rows in a body of
their own below the selectors (sorting a column never mixes them in)."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import jinja2
import pandas as pd

import selbench
from selbench.leaderboard import REFERENCE, UNTUNED
from selbench.reports import health
from selbench.reports.cards import TEXT_ONLY, Cards, load_cards, random_jaccard, store_root
from selbench.reports.export import WRITERS, csv_safe
from selbench.reports.plots import Figure, Style, all_figures, styles
from selbench.reports.tables import (
    NA,
    RunData,
    Table,
    all_tables,
    budgets_in_order,
    pools_table,
    sanity_in_order,
)

FORMATS = ("html", "latex", "md", "csv")
RUN_FILES = ("results.parquet", "timings.parquet")  # copied into data/ for the downloads
TIME_COLUMNS = ("Extraction", "Proxy", "Scoring", "Selection", "Fine-tune")  # the time table's seconds


def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("selbench.reports", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def tables_for(run: RunData, others: Sequence[RunData]) -> list[Table]:
    """The run's tables; with other runs (other pools), the cross-pool ARP table first."""
    return ([pools_table([run, *others])] if others else []) + all_tables(run)


def write_tables(tables: list[Table], out: Path, formats: tuple[str, ...]) -> list[Path]:
    written = []
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        if fmt == "html":
            continue
        writer, ext = WRITERS[fmt]
        for t in tables:
            written.append(write_atomic(out / "tables" / f"{t.key}.{ext}", writer(t)))
    return written


def render(run: RunData, out: Path | None = None, formats: tuple[str, ...] = FORMATS,
           others: Sequence[RunData] = ()) -> list[Path]:
    """Write the requested formats under ``out`` (default ``RUN_DIR/report``); return the files written.
    ``others``: runs on other pools, compared in the cross-pool ARP table (XMAS Table 3)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown}; choose from {', '.join(FORMATS)}")
    out = Path(out or run.run_dir / "report")
    out.mkdir(parents=True, exist_ok=True)
    # the HTML links every table's downloads, so it always brings the exports with it
    tables = tables_for(run, others)
    written = write_tables(tables, out, tuple(FORMATS[1:]) if "html" in formats else formats)
    if run.intervals is not None and ("html" in formats or "csv" in formats):  # the statistics, machine-readable
        ci = run.intervals
        doc = {"statistics": ci.info(), "cells": json.loads(ci.cells.to_json(orient="records")),
               "pairs": json.loads(ci.pairs.to_json(orient="records"))}
        written.append(write_atomic(out / "tables" / "intervals.json", json.dumps(doc, indent=1)))
    if "html" in formats:
        written += write_pages(run, tables, out)
    return written


# ------------------------------------------------------------------------------------------------ the page

@dataclass
class HtmlCell:
    text: str
    tag: str = "td"
    cls: str = ""
    title: str | None = None
    href: str | None = None
    card: str | None = None  # a second link: the cell's card
    sort: float | None = None  # the number the column sorts by (None: by text; N/A last)
    colour: str | None = None  # a selector's swatch
    budget: str | None = None  # the budget filter hides the cell when another budget is chosen


@dataclass
class HtmlRow:
    cells: list[HtmlCell]
    id: str | None = None
    budget: str | None = None
    cls: str = ""


@dataclass
class HtmlTable:
    key: str
    title: str
    caption: str
    header: list[HtmlCell]
    pinned: list[HtmlRow]  # the references: stay on top when sorting
    rows: list[HtmlRow]
    groups: list[tuple[str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the compact view said once instead of on every row
    budget: str | None = None  # a per-budget table: the filter hides all of it
    downloads: list[tuple[str, str]] = field(default_factory=list)  # (label, relative href)
    sanity: list[HtmlRow] = field(default_factory=list)  # the sanity references: stay below the selectors

    @property
    def body(self) -> list[HtmlRow]:
        return self.pinned + self.rows + self.sanity


def budget_slug(budget: str) -> str:
    """``10%`` → ``10pct``: as tables.py keys the per-benchmark tables (``benchmarks-10pct``)."""
    return re.sub(r"[^0-9A-Za-z]+", "", budget.replace("%", "pct"))


def card_id(budget: str, seed: int, style: Style) -> str:
    """A cell card's anchor in cards.html (by the selector's position: labels are user input)."""
    return f"card-{budget_slug(budget)}-seed{seed}-s{style.index}"


@dataclass
class PageContext:
    run: RunData
    styles: dict[str, Style]
    budgets: list[str]
    table_keys: set[str]
    cards: Cards | None
    flags: list[health.Flag]
    labels: dict[str, str] = field(default_factory=dict)  # a printed name or a label → the run's label

    def __post_init__(self) -> None:
        for sel in self.styles:
            self.labels.setdefault(sel, sel)
            self.labels.setdefault(self.run.selector_name(sel), sel)


def write_pages(run: RunData, tables: list[Table], out: Path) -> list[Path]:
    """index.html and cards.html with everything they link: plots, data downloads, lineage meta.json copies."""
    items = _items(run)
    flags = health.flags(run, items)
    figures = all_figures(run, out / "plots", [f.column for f in flags])
    written = [p for f in figures for p in (f.png, f.svg)]
    try:
        cards, no_cards = (None, "the run has no cells yet") if run.board.empty else load_cards(
            run.run_dir, run.spec, run.board)
    except (OSError, ValueError) as e:  # an unreadable store, a selection naming rows the pool lacks
        cards, no_cards = None, f"{type(e).__name__}: {e}"
    ctx = PageContext(run, styles(run), budgets_in_order(run) if not run.board.empty else [],
                      {t.key for t in tables}, cards, flags)
    downloads, data_files = _write_data(run, cards, out)
    written += data_files
    views = [_view(t, ctx) for t in tables]
    written += _localise_links(views, run, out)
    env = environment()
    common = {"run": run, "version": selbench.__version__, "budgets": ctx.budgets,
              "rendered": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "colours": {s: st.colour for s, st in ctx.styles.items()},
              "names": {s: run.selector_name(s) for s in [REFERENCE, UNTUNED, *ctx.styles]},
              "sanity_note": _sanity_legend(run)}
    page = env.get_template("index.html.j2").render(
        **common, tables=views, figures=[(f, inline_svg(f)) for f in figures], counts=health.counts(run),
        problems=health.problems(run), flags=flags, downloads=downloads, cards=cards, no_cards=no_cards,
        devices=_devices(run))
    written.append(write_atomic(out / "index.html", page))
    if cards is not None:
        cards_page = env.get_template("cards.html.j2").render(**common, sections=card_sections(ctx),
                                                              cards=cards, downloads=downloads)
        written.append(write_atomic(out / "cards.html", cards_page))
    elif (out / "cards.html").exists():
        (out / "cards.html").unlink()
    return written


def _sanity_legend(run: RunData) -> str:
    """A sentence under the colour legend when the run has sanity subsets ("" otherwise)."""
    subsets = sanity_in_order(run) if not run.board.empty else []
    if not subsets:
        return ""
    names = " and ".join(run.selector_name(s) for s in subsets)
    return (f"{names} (grey): sanity references chosen with the embedded world's ground truth; shown below the "
            "selectors, never ranked, marked best or timed.")


def _items(run: RunData) -> pd.DataFrame | None:
    path = run.run_dir / "items.parquet"
    return pd.read_parquet(path) if run.intervals is not None and path.exists() else None


def _devices(run: RunData) -> list[str]:
    col = run.board.get("device") if not run.board.empty else None
    return sorted({str(d) for d in col.dropna()}) if col is not None else []


def _row_cell(t: Table, row: list, ctx: PageContext) -> tuple[int | None, str | None, str | None]:
    """(column, selector label, budget) of a row that is about one selector: the Selector / Method column holds
    its printed name (``Cell`` holds ``name @ budget``), a Budget column its budget."""
    heads = list(t.header)
    budget = None
    if "Budget" in heads:
        text = row[heads.index("Budget")].text
        budget = text if text in ctx.budgets else None
    for j, h in enumerate(heads):
        if h in ("Selector", "Method") and j < len(row):
            label = ctx.labels.get(row[j].text)
            return (j if label else None), label, budget
        if h == "Cell" and j < len(row) and " @ " in row[j].text:
            name, _, b = row[j].text.rpartition(" @ ")
            label = ctx.labels.get(name)
            return (j if label else None), label, (b if b in ctx.budgets else budget)
    return None, None, budget


def _view(t: Table, ctx: PageContext) -> HtmlTable:
    """A table as the page shows it (see the module docstring)."""
    budget = next((b for b in ctx.budgets if t.key == f"benchmarks-{budget_slug(b)}"), None)
    flagged = {ctx.run.column_name(c): f.message for f in ctx.flags for c in ctx.run.columns if c.key == f.column}
    header = []
    for j, h in enumerate(t.header):
        cell = HtmlCell(h, tag="th")
        if t.key in ("arp", "arp-pools") and j and h in ctx.budgets:
            cell.budget = h
        if t.key.startswith("benchmarks-") and h in flagged:
            cell.text, cell.title, cell.cls = f"{h} *", flagged[h], "flagged"
        header.append(cell)
    seed = min(int(s) for s in ctx.run.board["seed"]) if not ctx.run.board.empty else 0
    pinned: list[HtmlRow] = []
    rows: list[HtmlRow] = []
    sanity: list[HtmlRow] = []
    for i, row in enumerate(t.rows):
        col, sel, row_budget = _row_cell(t, row, ctx)
        style = ctx.styles.get(sel) if sel else None
        cells = []
        for j, c in enumerate(row):
            cell = HtmlCell(c.text, tag="th" if j == 0 else "td", title=c.note, href=c.href,
                            sort=c.value if c.value is not None and math.isfinite(c.value) else None)
            cell.cls = "best" if c.best else ("na" if c.text == NA else "")
            if style is not None and j == col:
                cell.colour, cell.cls = style.colour, "name"
            if j < len(header) and header[j].budget is not None:
                cell.budget = header[j].budget
                if t.key == "arp" and sel is not None and style is not None:
                    _link_arp_cell(cell, sel, style, seed, ctx)
            cells.append(cell)
        html_row = HtmlRow(cells, budget=row_budget)
        if style is not None and (t.key == "arp" or t.key.startswith("benchmarks-")):
            html_row.id = f"{t.key}-s{style.index}"
        below = i >= len(t.rows) - t.tail  # a sanity reference's row
        html_row.cls = "sanity" if below else ""
        (pinned if i < t.split else sanity if below else rows).append(html_row)
    view = HtmlTable(t.key, t.title, t.caption, header, pinned, rows, list(t.groups), budget=budget,
                     downloads=[(ext.upper() if ext != "tex" else "LaTeX", f"tables/{t.key}.{ext}")
                                for ext in ("csv", "md", "tex")], sanity=sanity)
    if t.key in ("time", "lineage"):
        _compact(view, ctx)
    return view


def _link_arp_cell(cell: HtmlCell, sel: str, style: Style, seed: int, ctx: PageContext) -> None:
    """An ARP cell links to its row in the per-benchmark table of its budget, and to its cell card."""
    assert cell.budget is not None
    bench = f"benchmarks-{budget_slug(cell.budget)}"
    if cell.text != NA and bench in ctx.table_keys:
        cell.href = f"#{bench}-s{style.index}"
        cell.title = cell.title or f"{ctx.run.selector_name(sel)} @ {cell.budget}: its per-benchmark row"
    if ctx.cards is not None and ctx.cards.card(sel, cell.budget, seed) is not None:
        cell.card = f"cards.html#{card_id(cell.budget, seed, style)}"


def _compact(view: HtmlTable, ctx: PageContext) -> None:
    """Say once what every row says: a constant Device / Spec / Commit / Versions column becomes a note; GPU-hours
    that are 0 on every row (no GPU) are dropped. The exports keep every column."""
    body = view.body
    drop = []
    for j, h in enumerate(view.header):
        texts = {r.cells[j].text for r in body if j < len(r.cells)}
        if h.text in ("GPU-hours", "GPU-h") and all(r.cells[j].sort in (None, 0.0) for r in body):
            drop.append(j)
            view.notes.append("GPU-hours: 0 on every cell (no GPU was used), column left out.")
        elif h.text in ("Device", "Spec", "Commit", "Versions") and len(body) > 1 and len(texts) == 1:
            drop.append(j)
            value = texts.pop()
            if value not in ("", "—"):
                view.notes.append(f"{h.text}: {value} (every cell).")
    for j in reversed(drop):
        del view.header[j]
        for r in body:
            del r.cells[j]
    if view.key == "time":
        devices = _devices(ctx.run)
        where = f" on {devices[0]}" if len(devices) == 1 else " on several devices (see the Device column)"
        view.notes.append(f"Timings are device-bound (wall seconds{where}): compare them only within one machine; "
                          "OSC, a ratio of times on the same machine, travels better.")
        for h in view.header[1:]:
            if h.text.endswith("(s)") or h.text in TIME_COLUMNS:
                h.cls, h.title = "device-bound", "device-bound: wall seconds on this run's machine"


def _localise_links(views: list[HtmlTable], run: RunData, out: Path) -> list[Path]:
    """Copy every job file a table links to (lineage: ``meta.json`` in the store) into ``out/jobs/<id>/`` and
    point the link there; a link whose file the store does not have is dropped (its text stays)."""
    store, written = store_root(run.run_dir, run.spec), []
    for view in views:
        for row in view.body:
            for cell in row.cells:
                if not cell.href or cell.href.startswith("#"):
                    continue
                m = re.search(r"(?:^|/)jobs/([^/]+)/([^/]+)$", cell.href)
                if m is None:
                    continue
                jid, name = m.group(1), m.group(2)
                src = store / "jobs" / jid / name
                if not src.is_file():
                    cell.href, cell.title = None, f"{jid}: {name} is not in the store"
                    continue
                dest = out / "jobs" / jid / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
                written.append(dest)
                cell.href = f"jobs/{jid}/{name}"
    return written


def _write_data(run: RunData, cards: Cards | None, out: Path) -> tuple[list[tuple[str, list[tuple[str, str]]]],
                                                                       list[Path]]:
    """data/: the leaderboard (CSV, JSON, parquet), the run's results and timings (parquet), the cards; returns
    the downloads as (what, [(format, href)]) and the files written."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    downloads: list[tuple[str, list[tuple[str, str]]]] = []

    def frame(name: str, what: str, df: pd.DataFrame) -> None:
        links = []
        for ext in ("csv", "json", "parquet"):
            path = data / f"{name}.{ext}"
            if ext == "csv":  # labels are user input: a spreadsheet must not run one as a formula
                safe = df.rename(columns=lambda c: csv_safe(str(c)))
                safe = safe.apply(lambda col: col.map(lambda v: csv_safe(v) if isinstance(v, str) else v))
                write_atomic(path, safe.to_csv(index=False))
            elif ext == "json":
                write_atomic(path, df.to_json(orient="records", indent=1, default_handler=str))
            else:
                df.to_parquet(path, index=False)
            written.append(path)
            links.append((ext.upper() if ext != "parquet" else "parquet", f"data/{name}.{ext}"))
        downloads.append((what, links))

    frame("leaderboard", "Leaderboard (one row per cell and seed)", run.board)
    if cards is not None:
        frame("cards", "Cell cards (composition of every subset, Jaccard overlaps)", cards.frame())
    raw = []
    for name in RUN_FILES:
        src = run.run_dir / name
        if src.exists():
            shutil.copyfile(src, data / name)
            written.append(data / name)
            raw.append(("parquet", f"data/{name}"))
            downloads.append((f"{name.split('.')[0].capitalize()} (as the harness wrote them)", raw[-1:]))
    if (out / "tables" / "intervals.json").exists():
        downloads.append(("Bootstrap intervals (every cell, every pair)", [("JSON", "tables/intervals.json")]))
    return downloads, written


# ------------------------------------------------------------------------------------------------- figures

_SVG_ID = re.compile(r'\bid="([^"]+)"')
_SVG_REF = re.compile(r'((?:xlink:)?href="#|url\(#)([^")]+)')


def inline_svg(fig: Figure) -> str | None:
    """The figure's SVG as markup for the page: the XML prologue and metadata dropped, every id prefixed with the
    figure's key (the page holds several SVGs, and ids must be unique in a document). None when the file holds
    anything active (it cannot: labels are glyph paths; the page then shows the PNG file instead)."""
    svg = fig.svg.read_text(encoding="utf-8")
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    if re.search(r"<script|<foreignObject|\bon\w+\s*=|javascript:", svg, flags=re.I):
        return None
    svg = _SVG_ID.sub(lambda m: f'id="{fig.key}--{m.group(1)}"', svg)
    svg = _SVG_REF.sub(lambda m: f"{m.group(1)}{fig.key}--{m.group(2)}", svg)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{escape(fig.title)}" ', 1)


# --------------------------------------------------------------------------------------------------- cards

@dataclass
class CardSection:
    budget: str
    seed: int
    table: HtmlTable  # the comparison: the pool, then one row (card) per selector
    overlap: HtmlTable  # Jaccard between the selectors
    k: int  # rows per subset


def _pct(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def card_sections(ctx: PageContext) -> list[CardSection]:
    """Per budget and seed: the composition of each selector's subset next to the pool's, and their overlaps."""
    cards = ctx.cards
    assert cards is not None
    seeds = sorted({c.seed for c in cards.cells} | {k[2] for k in cards.missing})
    out = []
    for budget in ctx.budgets:
        for seed in seeds:
            members = [(sel, st, cards.card(sel, budget, seed)) for sel, st in ctx.styles.items()]
            members = [m for m in members if m[2] is not None or (m[0], budget, seed) in cards.missing]
            if members:
                n = next((c.profile.n for _, _, c in members if c is not None), 0)
                out.append(CardSection(budget, seed, _composition(ctx, cards, members, budget, seed),
                                       _overlaps(ctx, cards, members, budget, seed, n), n))
    return out


# the composition table's facet columns: text-only rows have a column of their own, not a source column
def _facet_columns(cards: Cards) -> list[tuple[str, str]]:
    return [(f, c) for f, cats in cards.facets.items() for c in cats if not (f == "source" and c == TEXT_ONLY)]


def _composition(ctx: PageContext, cards: Cards, members: list, budget: str, seed: int) -> HtmlTable:
    facets = _facet_columns(cards)
    head = ["Selector", "Rows", "Text-only %", "Repeated image %", "Chars Q1 / med / Q3", "Words med",
            *(c for _, c in facets)]
    groups = [("", 6)] + [(f"{f.capitalize()} mix (% of rows)", sum(1 for g, _ in facets if g == f))
                          for f in dict.fromkeys(f for f, _ in facets)]
    p = cards.pool

    def numbers(q, vs) -> list[HtmlCell]:
        return [HtmlCell(f"{q.n:,}", sort=q.n), vs(q.text_only, p.text_only), vs(q.repeated_image, p.repeated_image),
                HtmlCell(_quartiles(q.chars), sort=q.chars[1]), HtmlCell(f"{q.words[1]:g}", sort=q.words[1]),
                *(vs(q.shares[f][c], p.shares[f][c]) for f, c in facets)]

    pool_row = HtmlRow([HtmlCell("Pool", tag="th"), *numbers(p, lambda x, _: HtmlCell(_pct(x), sort=x))])
    rows = []
    for sel, st, card in members:
        first = HtmlCell(ctx.run.selector_name(sel), tag="th", colour=st.colour, cls="name")
        if card is None:
            why = HtmlCell(cards.missing[(sel, budget, seed)], cls="na message")
            rows.append(HtmlRow([first, why, *(HtmlCell("") for _ in head[2:])], id=card_id(budget, seed, st)))
        else:
            rows.append(HtmlRow([first, *numbers(card.profile, _vs_pool)], id=card_id(budget, seed, st)))
    return HtmlTable(f"cards-{budget_slug(budget)}-seed{seed}", f"Budget {budget}, seed {seed}",
                     "Each selector's subset next to the pool (shares in % of rows; ▲ / ▼: 10 or more points above / "
                     "below the pool's share, hover for the difference). Repeated image: rows whose image (sha256) "
                     "appears more than once in the subset. Lengths: characters and words over all turns.",
                     [HtmlCell(h, tag="th") for h in head], [pool_row], rows, groups, budget=budget)


def _overlaps(ctx: PageContext, cards: Cards, members: list, budget: str, seed: int, n: int) -> HtmlTable:
    picked = [(sel, st, card) for sel, st, card in members if card is not None]
    rows = []
    for sel, st, card in picked:
        cells = [HtmlCell(ctx.run.selector_name(sel), tag="th", colour=st.colour, cls="name")]
        for other, _, _ in picked:
            j = None if other == sel else card.jaccard.get(other)
            cells.append(HtmlCell("—" if other == sel else _num(j), sort=j, cls="diag" if other == sel else ""))
        rows.append(HtmlRow(cells))
    return HtmlTable(f"overlap-{budget_slug(budget)}-seed{seed}", f"Overlap at budget {budget}, seed {seed}",
                     f"Jaccard |A ∩ B| / |A ∪ B| of the selected rows; two independent random subsets of {n:,} of "
                     f"{cards.pool_size:,} rows would overlap ≈ {random_jaccard(n, cards.pool_size):.2f}.",
                     [HtmlCell("Jaccard", tag="th")]
                     + [HtmlCell(ctx.run.selector_name(s), tag="th") for s, _, _ in picked], [], rows, budget=budget)


def _quartiles(q: tuple[float, float, float]) -> str:
    return " / ".join("—" if math.isnan(v) else f"{v:.0f}" for v in q)


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _vs_pool(share: float, pool: float) -> HtmlCell:
    delta = 100 * (share - pool)
    mark = " ▲" if delta >= 10 else (" ▼" if delta <= -10 else "")
    return HtmlCell(_pct(share) + mark, sort=share, title=f"pool {_pct(pool)} %, {delta:+.1f} points",
                    cls="over" if mark == " ▲" else ("under" if mark else ""))


def write_atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path

