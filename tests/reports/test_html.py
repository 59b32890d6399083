"""The HTML report in headless Chromium (Debian's ``chromium``, installed by ``make apt``): a probe script reads what
the browser rendered — tables, the inline plots and the colours of their shapes, what sorting and the budget filter
do, every link, whether the page is wider than the window, and whether anything called ``alert`` (a selector is
labelled ``<script>alert(1)</script>``).

Two reports: the real small run's (session fixture), and a demo-shaped one built from frames in seconds (seven
selectors × three budgets, a failed cell, a cell without one benchmark, a cell that never ran, a benchmark on which
every cell ties), checked from a copy of its folder."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from PIL import Image
from typer.testing import CliRunner

from selbench.cli import app
from selbench.reports import build_report
from selbench.reports.plots import selector_styles
from tests.reports.frames import DEMO_BUDGETS, DEMO_FAILED, DEMO_MISSING, DEMO_NO_OCR, DEMO_SELECTORS, demo_store

HOSTILE = "<script>alert(1)</script>"
PROBE = """<script>
window.__alerts = [];
window.alert = function (m) { window.__alerts.push(String(m)); };
addEventListener("load", function () {
  function labels(table) {
    return Array.from(table.tBodies[table.tBodies.length - 1].rows).map(function (r) {
      return r.cells[0].textContent.trim(); });
  }
  var tables = Array.from(document.querySelectorAll("table"));
  var colours = {};  // "figure|selector index" -> colours of its shapes
  document.querySelectorAll("figure svg [id*='--sel']").forEach(function (g) {
    var m = g.id.match(/^(.+?)--sel(\\d+)-/);
    if (!m) return;
    g.querySelectorAll("path, use").forEach(function (el) {
      if (el.closest("defs")) return;
      var cs = getComputedStyle(el);
      [cs.fill, cs.stroke].forEach(function (c) {
        if (c && c !== "none") (colours[m[1] + "|" + m[2]] = colours[m[1] + "|" + m[2]] || []).push(c);
      });
    });
  });
  var out = {
    alerts: window.__alerts,
    scripts: document.querySelectorAll("script").length,
    svgs: Array.from(document.querySelectorAll("figure svg")).map(function (s) {
      var r = s.getBoundingClientRect(); return [r.width, r.height]; }),
    tables: tables.map(function (t) { return t.closest("section").id; }),
    bodyRows: tables.map(function (t) { return labels(t).length; }),
    fontPx: parseFloat(getComputedStyle(document.querySelector("table td")).fontSize),
    colours: colours,
    swatches: Array.from(document.querySelectorAll(".legend .key")).map(function (k) {
      return [k.textContent.trim(), getComputedStyle(k.querySelector(".swatch")).backgroundColor]; }),
    width: [document.documentElement.scrollWidth, window.innerWidth],
    scrolled: Array.from(document.querySelectorAll(".scroll")).filter(function (d) {
      return d.scrollWidth > d.clientWidth + 1; }).map(function (d) { return d.querySelector("table").id; }),
    links: Array.from(document.querySelectorAll("a[href]")).map(function (a) {
      return [a.getAttribute("href"), a.href]; }),
    ids: Array.from(document.querySelectorAll("[id]")).map(function (e) { return e.id; }),
    text: document.body.innerText
  };
  var arp = document.getElementById("table-arp");
  if (arp) {
    var head = arp.tHead.rows[arp.tHead.rows.length - 1].cells;
    var col = Array.from(head).findIndex(function (th) { return th.hasAttribute("data-budget"); });
    var body = arp.tBodies[arp.tBodies.length - 1];
    out.sort = {before: labels(arp)};
    head[col].click();
    out.sort.descending = labels(arp);
    out.sort.values = Array.from(body.rows).map(function (r) { return r.cells[col].getAttribute("data-v"); });
    head[col].click();
    out.sort.ascending = labels(arp);
  }
  var filter = document.getElementById("budget-filter");
  if (filter) {
    filter.value = filter.options[1].value;
    filter.dispatchEvent(new Event("change"));
    out.filtered = {
      shown: filter.value, visible: !filter.parentNode.hidden,
      sections: Array.from(document.querySelectorAll("section[data-budget]")).filter(function (s) {
        return !s.hidden; }).map(function (s) { return s.id; }),
      arpHeads: Array.from(document.querySelectorAll("#table-arp tr.head th")).filter(function (th) {
        return !th.hidden; }).map(function (th) { return th.textContent.trim(); })
    };
    filter.value = "";
    filter.dispatchEvent(new Event("change"));
  }
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: `make apt` (a dependency of `make test`) installs Debian's chromium")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run", f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def probe(tmp: Path, index: Path, width: int = 1440) -> dict:
    """Open ``index`` (a copy: the probe is written into it) in Chromium at ``width`` px; what the probe read."""
    index.write_text(index.read_text().replace("<head>", "<head>\n" + PROBE, 1))
    dom = chromium(tmp, "--dump-dom", f"--window-size={width},1600", index.as_uri()).stdout
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert m, "the probe did not run: the page never finished loading"
    return json.loads(html.unescape(m.group(1)))


def rgb(colour: str) -> str:
    r, g, b = (round(255 * x) for x in to_rgb(colour))
    return f"rgb({r}, {g}, {b})"


def check_links(found: dict, folder: Path, pages: dict[str, set[str]]) -> int:
    """Every link of a page resolves inside ``folder``: a file that exists there, or an anchor its page has.
    ``pages``: page name → its ids. Returns the number of links checked."""
    for raw, resolved in found["links"]:
        assert not raw.startswith(("../", "/", "http:", "https:", "file:")), f"link leaves the folder: {raw}"
        url = urlparse(resolved)
        assert url.scheme == "file", raw
        target = Path(unquote(url.path))
        assert target.resolve().is_relative_to(folder.resolve()), f"{raw} → {target}"
        assert target.is_file(), f"{raw} → {target} does not exist"
        if url.fragment:
            assert url.fragment in pages[target.name], f"{raw}: no element #{url.fragment} in {target.name}"
    return len(found["links"])


@pytest.mark.slow
def test_report_renders_in_chromium(small_run, tmp_path) -> None:
    page = tmp_path / "report"
    shutil.copytree(small_run["run_dir"] / "report", page)
    found = probe(tmp_path, page / "index.html")

    assert found["alerts"] == [] and found["scripts"] == 2  # the probe and the page's own (sorting, filter)
    assert HOSTILE in found["text"]  # ... the hostile label did not execute and reads as text
    assert found["tables"] == ["arp", "significance", "benchmarks-25pct", "benchmarks-50pct", "time", "lineage"]
    assert found["bodyRows"][0] == 3  # three selectors under the pinned rows (the reference, #Samples)
    assert len(found["svgs"]) == 4 and all(w >= 300 and h >= 200 for w, h in found["svgs"])  # plots inline
    assert found["fontPx"] >= 12
    for label in ("picker", "Length", "ARP leaderboard", "Time / OSC leaderboard", "Pareto front"):
        assert label in found["text"]
    arp_row = next(line for line in found["text"].splitlines() if line.startswith("picker\t"))  # a table row
    assert re.search(r"\d+\.\d", arp_row), f"ARP row has no number: {arp_row!r}"
    assert found["width"][0] <= found["width"][1] == 1440
    assert found["sort"]["descending"] != found["sort"]["before"] or len(set(found["sort"]["values"])) == 1

    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", (page / "index.html").as_uri())
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape == (1600, 1280)
    top = img[:500]  # header and the ARP table
    assert (top < 80).mean() > 0.005, "no dark text pixels where the leaderboard should be"
    assert img.std() > 20, "the screenshot is nearly blank"


def test_demo_shaped_report_in_chromium(tmp_path) -> None:
    """The demo's shape, built from frames: colours, gaps and reasons, sorting, the budget filter, links from a
    copy of the folder, and no horizontal overflow at 1440 px."""
    run_dir = demo_store(tmp_path / "store")
    folder, _ = build_report(run_dir)
    page = tmp_path / "elsewhere" / "copied report"  # a space in the path: links must be relative and encoded
    shutil.copytree(folder, page)
    pages = {}
    for name in ("index.html", "cards.html"):
        pages[name] = set(re.findall(r'\bid="([^"]+)"', (page / name).read_text()))
    found = probe(tmp_path, page / "index.html")
    cards = probe(tmp_path, page / "cards.html")
    board = pd.read_parquet(page / "data" / "leaderboard.parquet")
    names = {"random": "Random", "length": "Length", "perplexity": "Perplexity", "coincide": "COINCIDE",
             "prism": "PRISM", "xmas": "XMAS", "scalselect": "ScalSelect"}  # tables.py's paper names

    # one colour per selector in every plot, the same as its swatch on the page, none shared
    styles = selector_styles(DEMO_SELECTORS)
    per_selector: dict[str, set[str]] = {}
    figures: dict[str, set[str]] = {}
    for key, colours in found["colours"].items():
        fig, index = key.split("|")
        per_selector.setdefault(index, set()).update(colours)
        figures.setdefault(index, set()).add(fig)
    assert sorted(per_selector, key=int) == [str(i) for i in range(len(DEMO_SELECTORS))]
    for sel, st in styles.items():
        assert per_selector[str(st.index)] == {rgb(st.colour)}, sel
        assert figures[str(st.index)] == {"arp_vs_budget", "arp_vs_osc", "heatmap", "time_breakdown"}, sel
    assert len({st.colour for st in styles.values()}) == len(styles)
    assert dict(found["swatches"]) == {names[s]: rgb(st.colour) for s, st in styles.items()}

    # a missing cell: a gap in its selector's line, N/A in the table, its reason as text on the page
    assert "out of memory (RLIMIT_AS 2048 MB)" in found["text"]
    problems = [line for line in found["text"].splitlines() if line.startswith(f"{names[DEMO_FAILED[0]]} @ 20%")]
    assert problems and "finetune" in problems[0] and "failed" in problems[0]
    lines = found["text"].splitlines()
    assert any(line.startswith(f"{names[DEMO_NO_OCR[0]]} @ 30%") and "OCR" in line for line in lines)
    assert any(line.startswith(f"{names[DEMO_MISSING[0]]} @ 30%") and "never ran" in line for line in lines)
    assert "21 cells: 19 done · 1 failed · 1 missing · 1 incomplete" in found["text"]
    assert "all cells tie" in found["text"]  # the Count benchmark is flagged
    svg = (page / "index.html").read_text()
    xmas = DEMO_SELECTORS.index(DEMO_FAILED[0])
    line = re.search(rf'id="arp_vs_budget--sel{xmas}-line0">\s*<path d="([^"]+)"', svg)
    assert line and line.group(1).count("M") == 2 and "L" not in line.group(1)  # 10 % and 30 %, not joined

    # sorting by ARP reorders the table: descending, N/A last, then ascending
    arp = board[board["selector"] != "full"].groupby(["selector", "budget"])["arp_v1"].mean()
    first = DEMO_BUDGETS[0]
    want = sorted(DEMO_SELECTORS, key=lambda s: -arp[(s, first)] if pd.notna(arp[(s, first)]) else np.inf)
    assert found["sort"]["before"] == [names[s] for s in DEMO_SELECTORS]
    assert found["sort"]["descending"] == [names[s] for s in want] != found["sort"]["before"]
    assert found["sort"]["ascending"][:len(want)] == [names[s] for s in reversed(want)]
    # the budget filter: one budget's columns and tables
    assert found["filtered"]["visible"] and found["filtered"]["shown"] == first
    assert [s for s in found["filtered"]["sections"] if s.startswith("benchmarks-")] == ["benchmarks-10pct"]
    assert DEMO_BUDGETS[1] not in found["filtered"]["arpHeads"] and first in found["filtered"]["arpHeads"]

    # links (downloads, plots, tables, lineage meta.json, per-benchmark rows, cell cards) resolve in the copy
    assert check_links(found, page, pages) > 100 and check_links(cards, page, pages) > 5
    hrefs = {raw for raw, _ in found["links"]}
    assert {"data/leaderboard.csv", "data/leaderboard.json", "data/leaderboard.parquet", "data/cards.csv",
            "tables/intervals.json"} <= hrefs
    assert "#benchmarks-10pct-s1" in hrefs and "cards.html#card-10pct-seed0-s1" in hrefs  # Length @ 10 %
    assert any(h.startswith("jobs/") and h.endswith("/meta.json") for h in hrefs)
    assert not any("finetune-xmas-20" in h for h in hrefs)  # a failed job's meta.json does not exist: no link

    # nothing wider than the window at 1440 px, on either page, and no table needs its own scrollbar
    for got in (found, cards):
        assert got["width"][0] <= got["width"][1] == 1440, got["width"]
        assert got["scrolled"] == [], got["scrolled"]
        assert got["alerts"] == []
    # the cards page: a card per cell that has a selection; the one that never ran says so
    assert sum(i.startswith("card-") for i in pages["cards.html"]) == len(DEMO_SELECTORS) * len(DEMO_BUDGETS)
    assert "no selection (missing)" in cards["text"]


@pytest.mark.slow
def test_report_is_self_contained_with_exports(small_run) -> None:
    report = small_run["run_dir"] / "report"
    page = (report / "index.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page), "the report must not need the network"
    assert not re.search(r'(src|href)="\.\./', page), "every link stays inside the report folder"
    assert page.count("<svg ") == 4 and page.count("<script") == 1  # plots inline; the one script is the page's
    assert HOSTILE not in page and html.escape(HOSTILE) in page
    assert HOSTILE not in (report / "cards.html").read_text()
    for key in ("arp", "significance", "benchmarks-25pct", "benchmarks-50pct", "time", "lineage"):
        for ext in ("tex", "md", "csv"):
            assert (report / "tables" / f"{key}.{ext}").stat().st_size > 0
    for fig in ("arp_vs_budget", "arp_vs_osc", "heatmap", "time_breakdown"):
        assert (report / "plots" / f"{fig}.png").stat().st_size > 1000
        assert (report / "plots" / f"{fig}.svg").read_text().lstrip().startswith("<?xml")
    for name in ("leaderboard", "cards"):
        for ext in ("csv", "json", "parquet"):
            assert (report / "data" / f"{name}.{ext}").stat().st_size > 0
    assert len(list((report / "jobs").glob("*/meta.json"))) >= 5  # the lineage's links, copied in


@pytest.mark.slow
def test_report_cli_formats_and_cache(small_run, tmp_path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(small_run["run_dir"], run_dir, ignore=shutil.ignore_patterns("report"))
    res = CliRunner().invoke(app, ["report", str(run_dir), "--format", "latex", "--format", "md"])
    assert res.exit_code == 0, res.output
    tables = run_dir / "report" / "tables"
    assert sorted(p.suffix for p in tables.iterdir()) == [".md"] * 6 + [".tex"] * 6
    assert not (run_dir / "report" / "index.html").exists()
    assert "\\toprule" in (tables / "arp.tex").read_text()
    # the run's report stage: rendered once, skipped while nothing changed
    _, written = build_report(run_dir)
    assert (run_dir / "report" / "index.html").exists() and written
    assert build_report(run_dir)[1] == []
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "is not a run folder" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["report", str(run_dir), "--format", "pdf"])
    assert res.exit_code == 2 and "unknown --format pdf" in " ".join(res.output.split())
