"""The LaTeX exports compile as a paper would use them: every table of the golden run, of a run with CIs and
significance marks, of COINCIDE's eleven-column table, the cross-pool table and a run with a hostile label, each
``\\input`` into a two-column article (preamble: booktabs, graphicx) and compiled with pdflatex — no error, no
character the font lacks, no line wider than its column or page, narrow tables in one column, wide ones across both.

Needs Debian's texlive-latex-base and texlive-latex-recommended (booktabs), which `make apt` installs (about 50 MB,
half a minute); `make test-fast` does not install them, so the test is marked slow."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from selbench.reports.export import to_latex
from selbench.reports.tables import Table, all_tables, from_frames, load_run, pools_table
from tests.reports.frames import SPEC, frames
from tests.reports.test_paper_tables import paper_run
from tests.reports.test_uncertainty import SPEC as CI_SPEC
from tests.reports.test_uncertainty import run_frames

HOSTILE = r"<b>|x|</b> a_b & 50% $x$ #1 {y} ~\ ^"


def tables(tmp_path: Path) -> dict[str, Table]:
    results, timings = frames()
    golden = from_frames(results, timings, SPEC, tmp_path)
    ci_results, ci_timings, items = run_frames()
    runs = {"golden": golden, "ci": from_frames(ci_results, ci_timings, CI_SPEC, tmp_path, items),
            "coincide": load_run(paper_run(tmp_path / "store" / "runs" / "coincide")),
            "hostile": from_frames(*frames(alpha=HOSTILE), SPEC, tmp_path)}
    out = {f"{name}-{t.key}": t for name, run in runs.items() for t in all_tables(run)}
    out["golden-arp-pools"] = pools_table([golden, runs["coincide"]])
    return out


@pytest.mark.slow
def test_every_table_compiles_in_a_two_column_paper(tmp_path: Path) -> None:
    exe = shutil.which("pdflatex")
    if exe is None:
        pytest.fail("pdflatex is not installed: `make apt` (a dependency of `make test`) installs Debian's "
                    "texlive-latex-base and texlive-latex-recommended")
    found = tables(tmp_path)
    doc = tmp_path / "paper"
    doc.mkdir()
    for name, table in found.items():
        (doc / f"{name}.tex").write_text(to_latex(table))
    (doc / "paper.tex").write_text("\n".join([
        r"\documentclass[twocolumn]{article}", r"\usepackage{booktabs,graphicx}",
        r"\tracinglostchars=3",  # a character the font lacks is an error, not a silent gap
        r"\begin{document}", *(rf"\input{{{name}}}" for name in found), r"\end{document}", ""]))
    res = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=doc,
                         capture_output=True, text=True, timeout=120)
    log = (doc / "paper.log").read_text(errors="replace")
    assert res.returncode == 0, log[-3000:]
    assert not re.findall(r"^(Overfull \\hbox.*|Missing character.*)$", log, re.M)
    assert (doc / "paper.pdf").stat().st_size > 10_000
    env = {name: re.search(r"\\begin\{(table\*?)\}", (doc / f"{name}.tex").read_text()).group(1)  # type: ignore[union-attr]
           for name in found}
    assert env["coincide-arp"] == "table" and env["golden-time"] == "table*"
    assert env["coincide-benchmarks-20pct"] == "table*" and env["golden-lineage"] == "table*"
