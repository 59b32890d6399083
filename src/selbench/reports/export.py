"""Table writers: LaTeX (booktabs), Markdown (GitHub pipe tables) and CSV, from ``tables.Table``.

Every writer escapes what it prints: selector labels are user input (a submission may call itself anything)."""

from __future__ import annotations

import csv
import io
import re

from selbench.reports.tables import NA, Cell, Table

# ------------------------------------------------------------------------------------------------ LaTeX

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
}
_LATEX_TEXT = {"±": r"$\pm$", "×": r"$\times$", "—": "--", "–": "--", "†": r"$^\dagger$", "Δ": r"$\Delta$"}
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


def to_latex(table: Table) -> str:
    ncol = len(table.header)
    lines = [
        f"% {table.title} (selbench report)",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.key}}}",
        r"\begin{tabular}{l" + "r" * (ncol - 1) + "}",
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
        if table.split and i == table.split:
            lines.append(r"\midrule")
        lines.append(" & ".join(_latex_cell(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- Markdown

_MD_ESCAPE = re.compile(r"([\\`*_\[\]|])")


def markdown_escape(text: str) -> str:
    return _MD_ESCAPE.sub(r"\\\1", one_line(text)).replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(c: Cell) -> str:
    t = markdown_escape(c.text)
    return f"**{t}**" if c.best and t else t


def to_markdown(table: Table) -> str:
    lines = [f"### {markdown_escape(table.title)}", ""]
    groups = [(label, span) for label, span in table.groups if label]
    if groups:
        col, spans = 0, []
        for label, span in table.groups:
            if label:
                spans.append(f"{markdown_escape(label)}: " + ", ".join(
                    markdown_escape(h) for h in table.header[col:col + span]))
            col += span
        lines += ["Columns — " + "; ".join(spans), ""]
    lines.append("| " + " | ".join(markdown_escape(h) for h in table.header) + " |")
    lines.append("|" + "|".join([":--"] + ["--:"] * (len(table.header) - 1)) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
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
    cells as ``N/A``; link cells as the job id they point to."""
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
            if c.href:
                out.append(c.note or c.text)
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
