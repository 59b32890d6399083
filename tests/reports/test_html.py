"""The HTML report of a real harness run, opened in headless Chromium (Debian's ``chromium``, installed by
``make apt``): a screenshot, and a probe script that reads what the browser rendered — tables, decoded plots,
font size, and whether anything called ``alert`` (a selector is labelled ``<script>alert(1)</script>``)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from selbench.cli import app
from selbench.reports import build_report

HOSTILE = "<script>alert(1)</script>"
PROBE = """<script>
window.__alerts = [];
window.alert = function (m) { window.__alerts.push(String(m)); };
addEventListener("load", function () {
  var tables = Array.from(document.querySelectorAll("table"));
  var out = {
    alerts: window.__alerts,
    scripts: document.querySelectorAll("script").length,
    images: Array.from(document.images).map(function (i) { return [i.naturalWidth, i.naturalHeight]; }),
    tables: tables.map(function (t) { return t.closest("section").id; }),
    firstRows: tables.map(function (t) { return t.rows.length; }),
    fontPx: parseFloat(getComputedStyle(document.querySelector("table td")).fontSize),
    text: document.body.innerText
  };
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


@pytest.mark.slow
def test_report_renders_in_chromium(small_run, tmp_path) -> None:
    report = small_run["run_dir"] / "report"
    page = tmp_path / "report"
    shutil.copytree(report, page)
    index = page / "index.html"
    index.write_text(index.read_text().replace("<head>", "<head>\n" + PROBE, 1))

    dom = chromium(tmp_path, "--dump-dom", index.as_uri()).stdout
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert m, "the probe did not run: the page never finished loading"
    probe = json.loads(html.unescape(m.group(1)))

    assert probe["alerts"] == [] and probe["scripts"] == 1  # only the probe: the hostile label did not execute
    assert HOSTILE in probe["text"]  # ... and reads as text
    assert probe["tables"] == ["arp", "significance", "benchmarks-25pct", "benchmarks-50pct", "time", "lineage"]
    assert probe["firstRows"][0] == 2 + 1 + 3  # group header and header, the reference, three selectors
    assert len(probe["images"]) == 4 and all(w >= 300 and h >= 200 for w, h in probe["images"])  # plots decoded
    assert probe["fontPx"] >= 12
    for label in ("picker", "length", "ARP leaderboard", "Time / OSC leaderboard", "Pareto front"):
        assert label in probe["text"]
    arp_row = next(line for line in probe["text"].splitlines() if line.startswith("picker"))
    assert re.search(r"\d+\.\d", arp_row), f"ARP row has no number: {arp_row!r}"

    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", index.as_uri())
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape == (1600, 1280)
    top = img[:500]  # header and the ARP table
    assert (top < 80).mean() > 0.005, "no dark text pixels where the leaderboard should be"
    assert img.std() > 20, "the screenshot is nearly blank"


@pytest.mark.slow
def test_report_is_self_contained_with_exports(small_run) -> None:
    report = small_run["run_dir"] / "report"
    page = (report / "index.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page), "the report must not need the network"
    assert page.count('src="data:image/png;base64,') == 4
    assert HOSTILE not in page and html.escape(HOSTILE) in page
    for key in ("arp", "significance", "benchmarks-25pct", "benchmarks-50pct", "time", "lineage"):
        for ext in ("tex", "md", "csv"):
            assert (report / "tables" / f"{key}.{ext}").stat().st_size > 0
    for fig in ("arp_vs_budget", "arp_vs_osc", "heatmap", "time_breakdown"):
        assert (report / "plots" / f"{fig}.png").stat().st_size > 1000
        assert (report / "plots" / f"{fig}.svg").read_text().lstrip().startswith("<?xml")


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
