"""The ``selbench`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="SelBench: benchmark harness for multimodal data selection.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
pool_app = typer.Typer(help="Inspect and validate instruction pools.", no_args_is_help=True)
app.add_typer(pool_app, name="pool")
console = Console()
err = Console(stderr=True)


@app.command()
def world(
    out: Path = typer.Option(..., help="Folder to write the embedded world into (pool, benchmarks, models)."),
    seed: int = typer.Option(0, help="Generator seed: the same seed gives byte-identical data."),
    samples: int = typer.Option(3200, help="Pool size (≥ 3000 for the standard embedded world)."),
    bench_items: int = typer.Option(200, help="Items per embedded benchmark."),
) -> None:
    """Generate the embedded world: pool + images, 5 benchmarks, tiny target and proxy VLMs (stage-1 aligned)."""
    from selbench.embedded import build_world

    build_world(out, seed=seed, n_samples=samples, n_bench=bench_items, log=lambda m: err.print(m))
    console.print(f"embedded world ready: [bold]{out}[/]  (pool: {out / 'pool' / 'pool.json'}, "
                  f"benchmarks: {out / 'benchmarks'}, models: {out / 'models'})")


@pool_app.command("check")
def pool_check(
    pool: Path = typer.Argument(..., help="LLaVA-format pool: .json list or .jsonl."),
    images: Optional[Path] = typer.Option(None, help="Image root (default: the pool file's folder)."),
    strict: bool = typer.Option(False, help="Fail on the first bad row report instead of skipping."),
    manifest: Optional[Path] = typer.Option(None, help="Write the validated manifest (parquet) here."),
    report: Optional[Path] = typer.Option(None, help="Write every skipped row (JSON) here."),
) -> None:
    """Validate a pool: every bad row is reported with its index, id and reason."""
    from selbench.pool.llava import PoolError
    from selbench.pool.manifest import build_manifest, save_manifest
    from selbench.pool.llava import read_pool

    try:
        rep = read_pool(pool, images, strict=strict)
    except PoolError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(1)
    table = Table("row", "id", "reason", title=f"{len(rep.issues)} skipped rows" if rep.issues else None)
    for issue in rep.issues[:200]:
        table.add_row(str(issue.row), str(issue.id), issue.reason)
    if rep.issues:
        console.print(table)
    console.print(rep.summary())
    if report:
        report.write_text(json.dumps([i.__dict__ for i in rep.issues], indent=1))
    if manifest:
        m = build_manifest(rep, images if images is not None else pool.parent)
        save_manifest(m, manifest)
        console.print(f"manifest: {manifest} ({len(m)} samples, content hash {m.content_hash[:12]})")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
