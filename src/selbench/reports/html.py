"""Render a run's report: ``RUN_DIR/report/index.html`` (self-contained: CSS inline, plots as data URIs) plus
``plots/*.png|svg`` and ``tables/*.tex|md|csv``. jinja2 with autoescape on: labels are user input."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections.abc import Sequence
from pathlib import Path

import jinja2

import selbench
from selbench.leaderboard import REFERENCE
from selbench.reports.export import WRITERS
from selbench.reports.plots import all_figures
from selbench.reports.tables import RunData, Table, all_tables, pools_table

FORMATS = ("html", "latex", "md", "csv")


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
        figures = all_figures(run, out / "plots")
        written += [p for f in figures for p in (f.png, f.svg)]
        board = run.board
        cells = board[board["selector"] != REFERENCE]
        failures = [{"cell": f"{r['selector']} @ {r['budget']} seed {r['seed']}", "reason": r["reason"] or r["status"]}
                    for _, r in board.iterrows() if r["status"] != "done"]
        html = environment().get_template("index.html.j2").render(
            run=run, tables=tables, figures=figures,
            images={f.key: base64.b64encode(f.png.read_bytes()).decode() for f in figures},
            n_cells=len(cells), n_done=int((cells["status"] == "done").sum()) if len(cells) else 0,
            n_failed=int((board["status"] != "done").sum()) if len(board) else 0, failures=failures,
            rendered=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), version=selbench.__version__)
        written.append(write_atomic(out / "index.html", html))
    return written


def write_atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
