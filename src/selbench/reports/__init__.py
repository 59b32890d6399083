"""Reports: leaderboards (HTML), plots, LaTeX/Markdown/CSV tables and the nightly trend page."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path


def build_report(run_dir: str | Path, formats: tuple[str, ...] | None = None, out: str | Path | None = None,
                 force: bool = False, others: Sequence[str | Path] = (), decimals: int = 1
                 ) -> tuple[Path, list[Path]]:
    """Render a run folder's report (default: every format, under ``RUN_DIR/report``). Skipped when the run's
    results, timings, spec and the package version are unchanged since the last render of the same formats.
    ``others``: run folders on other pools, for the cross-pool ARP table."""
    import selbench
    from selbench.reports.html import FORMATS, render
    from selbench.reports.tables import load_run

    formats = tuple(formats or FORMATS)
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "report"
    h = hashlib.sha256(f"{selbench.__version__}|{','.join(formats)}|{decimals}".encode())
    for d in (run_dir, *map(Path, others)):
        for name in ("results.parquet", "timings.parquet", "spec.json", "items.parquet"):
            p = d / name
            h.update(p.read_bytes() if p.exists() else b"-")
    stamp = out / ".inputs"
    if not force and stamp.exists() and stamp.read_text() == h.hexdigest():
        return out, []
    written = render(load_run(run_dir, decimals), out, formats, [load_run(o, decimals) for o in others])
    stamp.write_text(h.hexdigest())
    return out, written
