"""Table writers: LaTeX (booktabs), Markdown (GitHub pipe tables) and CSV, from ``tables.Table``.

Every writer escapes what it prints: selector labels are user input (a submission may call itself anything).

LaTeX tables are meant to be input into a paper as they are (its preamble loads the booktabs and graphicx packages):
a table whose estimated width fits a two-column paper's column is a ``table``, a wider one a ``table*`` across
both columns, and either is shrunk to the line width only if it would still overflow it (never enlarged).
``tests/reports/test_latex_compiles.py`` compiles every table with pdflatex in a two-column article."""

from __future__ import annotations

import csv
import io
import re
from urllib.parse import quote

from selbench.reports.tables import NA, Cell, Table

# ------------------------------------------------------------------------------------------------ LaTeX

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
}
_LATEX_TEXT = {"±": r"$\pm$", "×": r"$\times$", "—": "--", "–": "--", "†": r"$^\dagger$", "Δ": r"$\Delta$",
               "−": r"$-$", "·": r"$\cdot$", "→": r"$\to$", "≈": r"$\approx$", "≤": r"$\leq$", "≥": r"$\geq$"}
_BREAKS = re.compile(r"[\r\n\t\v\f]+")  # a label with a line break must not break a table row


def one_line(text: str) -> str:
    return _BREAKS.sub(" ", text)


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in one_line(text))
    for k, v in _LATEX_TEXT.items():
        out = out.replace(k, v)
    return out


def _latex_cell(c: Cell) -> str:
    t = latex_escape(c.text)
    return rf"\textbf{{{t}}}" if c.best else t


COLUMN_PT = 230.0  # a two-column paper's column (article: 229.5 pt; ACL's 219 pt shrinks such a table ≤ 5 %)
TABCOLSEP_PT = 4.0


def _text_pt(text: str) -> float:
    """Roughly how wide ``text`` sets in \\small (9 pt Computer Modern): capitals are wide, spaces and stops narrow."""
    pt = 0.0
    for ch in one_line(text):
        pt += 6.6 if ch.isupper() or ch in "±×%#@mw" else 4.6 if ch.isalnum() else 7.0 if ch in "†Δ" else 2.8
    return pt


def latex_width(table: Table) -> float:
    """The table's estimated width in points: its widest text per column plus the column gaps, or a column
    group's label where that is wider than its columns."""
    widths = [max([_text_pt(h)] + [_text_pt(r[j].text) for r in table.rows if j < len(r)]) + 2 * TABCOLSEP_PT
              for j, h in enumerate(table.header)]
    col, total = 0, 0.0
    for label, span in table.groups or [("", len(widths))]:
        total += max(sum(widths[col:col + span]), _text_pt(label) + 2 * TABCOLSEP_PT)
        col += span
    return total + sum(widths[col:])


def to_latex(table: Table) -> str:
    ncol = len(table.header)
    env = "table" if latex_width(table) <= COLUMN_PT else "table*"
    align = table.align if len(table.align) == ncol else "l" + "r" * (ncol - 1)
    lines = [
        f"% {table.title} (selbench report); preamble: \\usepackage{{booktabs,graphicx}}",
        rf"\begin{{{env}}}[t]",
        r"\centering",
        r"\small",
        rf"\setlength{{\tabcolsep}}{{{TABCOLSEP_PT:g}pt}}",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.key}}}",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",  # shrink only what overflows
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
    ]
    if any(label for label, _ in table.groups):
        heads, rules, col = [], [], 1
        for label, span in table.groups:
            heads.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}" if span > 1 or label else "")
            if label:
                rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
            col += span
        lines.append(" & ".join(heads) + r" \\")
        lines.append(" ".join(rules))
    lines.append(" & ".join(latex_escape(h) for h in table.header) + r" \\")
    lines.append(r"\midrule")
    for i, row in enumerate(table.rows):
        if (table.split and i == table.split) or (table.tail and i == len(table.rows) - table.tail):
            lines.append(r"\midrule")  # references above, sanity references below: never read as selectors
        lines.append(" & ".join(_latex_cell(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", rf"\end{{{env}}}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- Markdown

_MD_ESCAPE = re.compile(r"([\\`*_\[\]|])")


def markdown_escape(text: str) -> str:
    return _MD_ESCAPE.sub(r"\\\1", one_line(text)).replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(c: Cell, link_base: str) -> str:
    t = markdown_escape(c.text)
    if c.href and t:
        href = c.href if "://" in c.href or c.href.startswith("/") else link_base + c.href
        t = f"[{t}]({quote(href, safe='/:#?=&')})"
    return f"**{t}**" if c.best and t else t


def to_markdown(table: Table, link_base: str = "../") -> str:
    """A GitHub table. Column groups: one group over the data columns goes into the title; several prefix their
    columns' headers ("pool · 10%"), since a pipe table has one header row. ``link_base``: where the report folder
    is from the file (links are relative to it; the files live in ``report/tables/``)."""
    groups = [(label, span) for label, span in table.groups if label]
    header = [markdown_escape(h) for h in table.header]
    title = markdown_escape(table.title)
    if len(groups) == 1:
        title += f" — {markdown_escape(groups[0][0])}"
    elif groups:
        col = 0
        for label, span in table.groups:
            if label:
                header[col:col + span] = [f"{markdown_escape(label)} · {h}" for h in header[col:col + span]]
            col += span
    lines = [f"### {title}", ""]
    lines.append("| " + " | ".join(header) + " |")
    align = table.align if len(table.align) == len(table.header) else "l" + "r" * (len(table.header) - 1)
    lines.append("|" + "|".join({"l": ":--", "r": "--:", "c": ":-:"}.get(a, ":--") for a in align) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(c, link_base) for c in row) + " |")
    lines += ["", f"*{markdown_escape(table.caption)}*", ""]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- CSV

_FORMULA = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet would run as a formula (CSV injection)


def csv_safe(text: str) -> str:
    """User text as a CSV field a spreadsheet shows as text: a leading formula character gets a quote."""
    return "'" + text if text.startswith(_FORMULA) else text


def to_csv(table: Table) -> str:
    """Numbers as numbers (full precision), a ``<column> std`` column wherever a column has a std over seeds,
    ``<column> low`` / ``high`` wherever it has a bootstrap CI and ``<column> p`` wherever it has a p-value; N/A
    cells as ``N/A``; abbreviated cells (job ids, commits) whole."""
    ncol = len(table.header)
    has_std = [any(r[j].std is not None for r in table.rows) for j in range(ncol)]
    has_ci = [any(r[j].low is not None for r in table.rows) for j in range(ncol)]
    has_p = [any(r[j].p is not None for r in table.rows) for j in range(ncol)]
    header = []
    for j, h in enumerate(table.header):
        header.append(csv_safe(h) if h else f"column {j + 1}")
        if has_std[j]:
            header.append(f"{h} std")
        if has_ci[j]:
            header += [f"{h} low", f"{h} high"]
        if has_p[j]:
            header.append(f"{h} p")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in table.rows:
        out = []
        for j, c in enumerate(row):
            if c.full:
                out.append(csv_safe(c.full))
            elif c.value is not None:
                out.append(f"{c.value:.6g}")
            else:
                out.append(csv_safe(c.text))
            if has_std[j]:
                out.append("" if c.std is None else f"{c.std:.6g}")
            if has_ci[j]:
                out += ["" if c.low is None else f"{c.low:.6g}", "" if c.high is None else f"{c.high:.6g}"]
            if has_p[j]:
                out.append("" if c.p is None else f"{c.p:.6g}")
        w.writerow(out)
    return buf.getvalue()


WRITERS = {"latex": (to_latex, "tex"), "md": (to_markdown, "md"), "csv": (to_csv, "csv")}
__all__ = ["NA", "WRITERS", "latex_escape", "markdown_escape", "to_csv", "to_latex", "to_markdown"]
