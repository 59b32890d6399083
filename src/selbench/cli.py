"""The ``selbench`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:  # the CLI imports its layers lazily: `selbench --help` stays fast
    from selbench.evaluators.protocols import Column

app = typer.Typer(help="SelBench: benchmark harness for multimodal data selection.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
pool_app = typer.Typer(help="Inspect and validate instruction pools.", no_args_is_help=True)
app.add_typer(pool_app, name="pool")
models_app = typer.Typer(help="Build the real path's model folders from released parts (docs/models.md).",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")
# Wide when not a terminal (logs, CI): the leaderboard has a column per benchmark.
console = Console() if Console().is_terminal else Console(width=200)
err = Console(stderr=True) if Console(stderr=True).is_terminal else Console(stderr=True, width=200)


@app.command()
def world(
    out: Path = typer.Option(..., help="Folder to write the embedded world into (pool, benchmarks, models)."),
    seed: int = typer.Option(0, help="Generator seed: the same seed gives byte-identical data."),
    samples: int = typer.Option(3200, help="Pool size (≥ 3000 for the standard embedded world)."),
    bench_items: int = typer.Option(200, help="Items per embedded benchmark."),
    noise: float | None = typer.Option(None, help="Share of pool turns whose label is flipped, in [0, 1) "
                                       "(default: the generator's 0.06; the benchmarks stay clean)."),
) -> None:
    """Generate the embedded world: pool + images, 5 benchmarks, tiny target and proxy VLMs (stage-1 aligned)."""
    from selbench.embedded import build_world
    from selbench.pool.world import NOISE

    try:
        build_world(out, seed=seed, n_samples=samples, n_bench=bench_items, noise=NOISE if noise is None else noise,
                    log=lambda m: err.print(m))
    except ValueError as e:  # a bad setting, refused before anything under --out is touched
        err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2) from None
    console.print(f"embedded world ready: [bold]{out}[/]  (pool: {out / 'pool' / 'pool.json'}, "
                  f"benchmarks: {out / 'benchmarks'}, models: {out / 'models'})")


@pool_app.command("check")
def pool_check(
    pool: Path = typer.Argument(..., help="LLaVA-format pool: .json list or .jsonl."),
    images: Path | None = typer.Option(None, help="Image root (default: the pool file's folder)."),
    strict: bool = typer.Option(False, help="Fail on the first bad row report instead of skipping."),
    manifest: Path | None = typer.Option(None, help="Write the validated manifest (parquet) here."),
    report: Path | None = typer.Option(None, help="Write every skipped row (JSON) here."),
    workers: int | None = typer.Option(None, min=1, help="Image-check worker processes (default: one per core)."),
    decode: bool = typer.Option(False, help="Fully decode every image (default: header, size, truncation)."),
    cache: Path | None = typer.Option(Path(".cache/selbench/pool"), help="Image-check cache folder (a re-check "
                                      "of an unchanged pool only stats its images); --no-cache: none."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Check every image again."),
) -> None:
    """Validate a pool: every bad row is reported with its index, id and reason; prints the pool's fingerprint."""
    from selbench.pool.llava import PoolError
    from selbench.pool.manifest import manifest_from_pool, save_manifest

    try:
        m, rep = manifest_from_pool(pool, images, strict=strict, decode_images=decode, workers=workers,
                                    image_cache=None if no_cache else cache)
    except PoolError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    table = Table("row", "id", "reason", title=f"{len(rep.issues)} skipped rows" if rep.issues else None)
    for issue in rep.issues[:200]:  # ids and reasons are data, not rich markup
        table.add_row(str(issue.row), escape(str(issue.id)), escape(issue.reason))
    if rep.issues:
        console.print(table)
    console.print(escape(rep.summary()))
    console.print(f"fingerprint: {m.content_hash}  ({len(m)} samples)")
    if report:
        report.write_text(json.dumps([i.__dict__ for i in rep.issues], indent=1))
    if manifest:
        save_manifest(m, manifest)
        console.print(f"manifest: {escape(str(manifest))}")


@models_app.command("assemble")
def models_assemble(
    llm: Path = typer.Option(..., help="HF causal-LM folder (e.g. vicuna-7b-v1.5)."),
    vision: Path = typer.Option(..., help="HF vision folder: CLIPVisionModel / a full CLIPModel / SigLIP."),
    projector: Path = typer.Option(..., help="The stage-1 projector weights as released (mm_projector.bin)."),
    out: Path = typer.Option(..., help="Output folder (a LlavaForConditionalGeneration checkpoint)."),
    pad_to_square: bool = typer.Option(True, help="Pad images to a square with the mean colour (LLaVA-1.5)."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Assemble the stage-1 LLaVA-1.5 target the papers fine-tune: LLM + vision tower + stage-1 projector."""
    from selbench.models.assemble import AssemblyError, assemble_llava

    try:
        folder = assemble_llava(llm, vision, projector, out, pad_to_square=pad_to_square, overwrite=overwrite,
                                log=lambda m: err.print(escape(m)))
    except AssemblyError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    console.print(f"assembled: [bold]{escape(str(folder))}[/]")


@models_app.command("convert-tinyllava")
def models_convert_tinyllava(
    src: Path = typer.Argument(..., help="A released TinyLLaVA checkpoint folder (Factory or legacy layout)."),
    out: Path = typer.Option(..., help="Output folder (a LlavaForConditionalGeneration checkpoint)."),
    llm: Path | None = typer.Option(None, help="The LLM's own folder, where the checkpoint lacks its tokenizer."),
    vision: Path | None = typer.Option(None, help="The vision tower's own folder (its image processor)."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Convert TinyLLaVA-2.0B (the XMAS/COINCIDE proxy) to a folder the harness loads."""
    from selbench.models.assemble import AssemblyError, convert_tinyllava

    try:
        folder = convert_tinyllava(src, out, llm_dir=llm, vision_dir=vision, overwrite=overwrite,
                                   log=lambda m: err.print(escape(m)))
    except AssemblyError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    console.print(f"converted: [bold]{escape(str(folder))}[/]")


def _load_config(text: str | None) -> dict:
    """``--config`` takes a YAML/JSON file or an inline YAML mapping."""
    import yaml

    if not text:
        return {}
    path = Path(text)
    data = yaml.safe_load(path.read_text() if path.is_file() else text)
    if not isinstance(data, dict):
        raise typer.BadParameter(f"--config: expected a mapping, got {data!r}")
    return data


@app.command("select")
def select_cmd(
    selector: str = typer.Option(..., "--selector", help="Registered selector name (see `selbench selectors`)."),
    pool: Path = typer.Option(..., help="LLaVA-format pool (.json/.jsonl) or a manifest (.parquet)."),
    budget: str = typer.Option(..., help="A count (10000), a fraction (0.2) or a percentage (20%)."),
    out: Path = typer.Option(..., help="Output: one pool id per line; a JSON sidecar is written beside it."),
    seed: int = typer.Option(0, help="Selection seed."),
    images: Path | None = typer.Option(None, help="Image root (default: the pool file's folder)."),
    target: Path | None = typer.Option(None, help="Target VLM folder (HF format)."),
    proxy: Path | None = typer.Option(None, help="Proxy VLM folder (HF format)."),
    config: str | None = typer.Option(None, help="Selector config: a YAML/JSON file or inline YAML."),
    features: Path | None = typer.Option(None, help="Precomputed features (.npy, one row per sample)."),
    cache: Path = typer.Option(Path(".cache/selbench"), help="Score cache: re-select budgets for free."),
    device: str | None = typer.Option(None, help="cpu / cuda (default: cuda if available)."),
    batch_size: int = typer.Option(32, help="Extraction batch size."),
) -> None:
    """Score a pool with one selector (cached) and write the subset for a budget."""
    import numpy as np

    from selbench.pool.manifest import load_manifest, manifest_from_pool
    from selbench.selectors import ScoringContext, SelectionError, get_selector
    from selbench.selectors.scoring import from_features, score_cached, select, write_selection

    try:
        if pool.suffix == ".parquet":
            manifest = load_manifest(pool)
        else:
            manifest, rep = manifest_from_pool(pool, images)
            if rep.issues:
                err.print(f"[yellow]{len(rep.issues)} bad rows skipped[/] (run `selbench pool check` for the list)")
        sel = get_selector(selector, _load_config(config))
        if features is not None:
            artifacts, meta = from_features(sel, np.load(features), manifest), {"features": str(features)}
        else:
            ctx = ScoringContext(work_dir=cache, target=target, proxy=proxy, device=device, batch_size=batch_size)
            artifacts, meta = score_cached(sel, manifest, ctx, cache)
        idx, select_s = select(sel, artifacts, budget, seed, len(manifest))
    except (SelectionError, ValueError) as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from None
    write_selection(out, manifest, idx, {**meta, "budget": budget, "seed": seed, "select_seconds": select_s})
    console.print(f"{len(idx)} of {len(manifest)} samples → {out} (sidecar {out.name}.json)"
                  + (" [dim](scores from cache)[/]" if meta.get("cached") else ""))


@app.command("selectors")
def selectors_cmd() -> None:
    """List registered selectors (built-ins and `selbench.selectors` entry points)."""
    from selbench.selectors.registry import BUILTIN, available

    table = Table("name", "implementation", "source")
    for name, path in sorted(available().items()):
        table.add_row(name, path, "built-in" if name in BUILTIN else "plugin")
    console.print(table)


def _print_board(board, columns: list[Column]) -> None:
    from selbench.evaluators.relative import ARP_VERSION, OSC_VERSION

    if board.empty:
        console.print("[yellow]no results yet[/]")
        return
    table = Table("selector", "budget", "seed", f"ARP ({ARP_VERSION})", *[escape(c.label) for c in columns],
                  f"OSC ({OSC_VERSION})", "status",
                  title="Leaderboard: ARP = mean relative performance vs full-data fine-tuning (%); "
                        "benchmark columns are raw scores (%)")
    fmt = lambda v, d=1: "N/A" if v is None or v != v else f"{v:.{d}f}"  # noqa: E731
    for _, r in board.iterrows():
        # labels and reasons are data, not markup ("balanced [submission 0.1.0]" must print as it is)
        table.add_row(escape(r["selector"]), r["budget"], str(r["seed"]), fmt(r[ARP_VERSION]),
                      *[fmt(_shown(r[c.key], c)) for c in columns],
                      fmt(r.get(OSC_VERSION), 2), escape(r["status"] + (f": {r['reason']}" if r["reason"] else "")))
    console.print(table)


def _shown(value: float | None, column: Column) -> float | None:
    """A column's raw value as tables show it: 0–1 metrics × 100, others (MME) as they are."""
    if value is None or value != value:
        return None
    return value * column.display_factor


def _items(run_dir: Path):
    """The run's per-item outcomes (items.parquet), or None."""
    import pandas as pd

    path = run_dir / "items.parquet"
    return pd.read_parquet(path) if path.exists() else None


def _report(run_dir: Path) -> None:
    """The report stage after a run: HTML + plots + LaTeX/Markdown/CSV, skipped when nothing changed."""
    from selbench.reports import build_report

    build_report(run_dir)


def _run_spec(spec: Path, fail_exit: bool = True):
    from selbench.harness import runner
    from selbench.progress import progress_bar

    try:
        runner.load_spec(spec)
    except ValueError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    with progress_bar(f"run {spec.name}") as advance:
        def on_event(job, outcome) -> None:
            if outcome is None:
                who = escape(str(job.cell.get("selector", "")))
                err.print(f"[dim]start[/] {job.id} {who} {job.cell.get('budget', '')}")
                return
            colour = {"done": "green", "cached": "cyan", "failed": "red", "blocked": "yellow"}[outcome.status]
            err.print(f"[{colour}]{outcome.status}[/] {job.id}"
                      + (f" — {escape(outcome.reason)}" if outcome.reason else "")
                      + (f" ({outcome.seconds:.1f}s)" if outcome.seconds else ""))
            advance(1)

        result = runner.run(spec, on_event=on_event)
    _report(result.out)
    _print_board(result.board, result.spec.columns)
    counts: dict[str, int] = {}
    for o in result.statuses.values():
        counts[o.status] = counts.get(o.status, 0) + 1
    console.print(f"jobs: {counts}")
    console.print(f"results: [bold]{result.out / 'results.parquet'}[/], timings: {result.out / 'timings.parquet'}, "
                  f"leaderboard: {result.out / 'leaderboard.parquet'}")
    console.print(f"report: [bold]{result.out / 'report' / 'index.html'}[/]")
    if fail_exit and (counts.get("failed") or counts.get("blocked")):
        raise typer.Exit(1)
    return result


@app.command()
def run(spec: Path = typer.Argument(..., help="Run spec (YAML).")) -> None:
    """Run every cell of a spec; completed stages are reused, a killed run resumes."""
    _run_spec(spec)


@app.command()
def demo(spec: Path = typer.Option(Path("configs/demo.yaml"), help="The demo spec (its `world.out` says "
                                                                   "where the embedded world lives).")) -> None:
    """The main job on the embedded default: all selectors × budgets + the full-data reference."""
    _run_spec(spec)


@app.command()
def status(spec: Path = typer.Argument(..., help="Run spec (YAML).")) -> None:
    """The matrix of cells with done / running / failed / pending per stage (reads the store only)."""
    from selbench.harness import runner

    try:
        plan, states = runner.status(spec)
    except ValueError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    table = Table("selector", "budget", "seed", "score", "select", "finetune", "evaluate")
    colour = {"done": "green", "failed": "red", "running": "yellow", "pending": "dim"}
    for cell in [plan.reference, *plan.cells]:
        cols = []
        for stage in ("score", "select", "finetune", "evaluate"):
            jid = cell.jobs.get(stage)
            st = states.get(jid, "-") if jid else "-"
            cols.append(f"[{colour.get(st, 'white')}]{st}[/]")
        table.add_row(escape(cell.selector), cell.budget, str(cell.seed), *cols)
    console.print(table)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run folder: STORE/runs/NAME (holds results.parquet)."),
    also: list[Path] = typer.Option([], "--also", help="Another run folder (another pool) for the cross-pool ARP "
                                                        "table (XMAS Table 3 layout); repeatable."),
    format: list[str] = typer.Option(["html"], "--format", "-f",
                                     help="html (with plots and every export), latex, md or csv; repeatable."),
    out: Path | None = typer.Option(None, help="Output folder (default RUN_DIR/report)."),
    decimals: int = typer.Option(1, min=0, max=4, help="Digits of scores and ARPs (papers print 1 or 2)."),
) -> None:
    """Render a run's leaderboards: HTML with plots, LaTeX (booktabs), Markdown and CSV tables."""
    from selbench.reports import build_report
    from selbench.reports.html import FORMATS

    bad = [f for f in format if f not in FORMATS]
    if bad:
        err.print(f"[red]error:[/] unknown --format {', '.join(bad)}; choose from {', '.join(FORMATS)}")
        raise typer.Exit(2)
    try:
        folder, written = build_report(run_dir, tuple(format), out, force=True, others=also, decimals=decimals)
    except FileNotFoundError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    for p in written:
        console.print(str(p))
    if "html" in format:
        console.print(f"report: [bold]{folder / 'index.html'}[/]")


def _run_for_nightly(spec: Path):
    """Run a spec and its report with nothing printed meanwhile (the nightly's verdict comes first): every line the
    run would print — each job's start and outcome, the runner's messages, warnings — goes into the returned log,
    which the nightly keeps as the night's run.log."""
    import contextlib
    import io
    import warnings

    from selbench.harness import runner

    try:
        runner.load_spec(spec)
    except ValueError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2) from None
    log = io.StringIO()

    def on_event(job, outcome) -> None:
        who = f"{job.cell.get('selector', '')} {job.cell.get('budget', '')}".strip()
        if outcome is None:
            log.write(f"start {job.id} {who}\n")
        else:
            log.write(f"{outcome.status} {job.id} {who}" + (f" — {outcome.reason}" if outcome.reason else "")
                      + (f" ({outcome.seconds:.1f}s)" if outcome.seconds else "") + "\n")

    def on_message(message: str) -> None:
        log.write(f"[selbench] {message}\n")

    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), warnings.catch_warnings():
        warnings.simplefilter("default")  # each warning once, into the log
        result = runner.run(spec, on_event=on_event, on_message=on_message)
        _report(result.out)
    return result, log.getvalue()


@app.command()
def nightly(
    spec: Path = typer.Argument(..., help="Run spec (YAML)."),
    history: Path = typer.Option(..., help="History folder: history.parquet, nights/, index.html (trend page)."),
    arp_tolerance: float = typer.Option(5.0, help="Smallest ARP change (points) that counts, with one seed."),
    osc_tolerance: float = typer.Option(0.25, help="Smallest relative OSC change that counts."),
    z: float = typer.Option(2.0, help="Noise multiple of the seed std of the mean difference (several seeds)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print the verdict and the changed cells only."),
) -> None:
    """Run a spec, compare every cell with the previous night, append to the history, render the trend page.
    The first line printed is the verdict (REGRESSION / SPEC CHANGED / IMPROVED / UNCHANGED / FIRST NIGHT), then
    the spec changes and changed cells; then, unless --quiet, where things are and the leaderboard. The run's own
    lines go to the night's run.log. Exits 1 when a cell regressed (ARP or OSC beyond noise, or a cell that now
    fails); a spec change (other than its store) is reported as such and never counts as a regression."""
    from selbench.reports.nightly import Thresholds, record

    result, log = _run_for_nightly(spec)
    commit = None
    if not result.board.empty and "commit" in result.board.columns:
        commit = next((c for c in result.board["commit"] if isinstance(c, str)), None)
    saved = result.out / "spec.json"
    try:
        night = record(history, result.board, result.spec.name, result.spec.fingerprint(),
                       commit, Thresholds(arp_tolerance, osc_tolerance, z),
                       benchmarks=[c.key for c in result.spec.columns], items=_items(result.out),
                       columns=result.spec.columns, spec=json.loads(saved.read_text()) if saved.exists() else None,
                       report=result.out / "report" / "index.html", log=log)
    except ValueError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2) from None
    for line in night.lines():  # labels and reasons are data: printed as they are, never as markup
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if not quiet:
        console.print(f"trend page: {night.page}", markup=False, highlight=False, soft_wrap=True)
        console.print(f"this night: {night.folder / 'comparison.json'}", markup=False, highlight=False,
                      soft_wrap=True)
        _print_board(result.board, result.spec.columns)
        counts: dict[str, int] = {}
        for o in result.statuses.values():
            counts[o.status] = counts.get(o.status, 0) + 1
        console.print(f"jobs: {counts}", markup=False, highlight=False)
    raise typer.Exit(night.exit_code)


@app.command("ls")
def ls(store: Path = typer.Option(Path("runs/store"), help="Artifact store root.")) -> None:
    """Runs in a store with their result counts."""
    import pandas as pd

    runs = sorted((store / "runs").glob("*/results.parquet")) if (store / "runs").exists() else []
    if not runs:
        console.print(f"no runs in {store}")
        return
    table = Table("run", "cells", "result rows", "path")
    for p in runs:
        df = pd.read_parquet(p)
        cells = df[["selector", "budget", "seed"]].drop_duplicates().shape[0] if len(df) else 0
        table.add_row(p.parent.name, str(cells), str(len(df)), str(p.parent))
    console.print(table)


@app.command()
def submit(
    source: str = typer.Argument(..., help="A selector package folder (pyproject with one `selbench.selectors` "
                                           "entry point) or a container image built FROM the harness image."),
    spec: Path = typer.Option(Path("configs/demo.yaml"), help="The protocol to run it on."),
    selector: str | None = typer.Option(None, help="For an image: the selector's registry name inside it."),
    trust_local: bool = typer.Option(False, "--trust-local",
                                     help="Run a package's code outside a container, with your own rights (and "
                                          "import it here to plan). Without it a package needs executor.kind docker."),
) -> None:
    """Conformance checks, then the spec's protocol with the submission on its leaderboard (exit 1: rejected).
    A package is built into its own image and runs only in containers under the Docker executor."""
    from selbench.harness.spec import load_spec
    from selbench.harness.submit import SubmissionError, from_image, from_package
    from selbench.harness.submit import submit as run_submission

    try:
        store = runner_store(spec)
        if Path(source).is_dir():
            if trust_local:
                err.print("[yellow]--trust-local:[/] the submission's code runs with your rights, unsandboxed")
            sub = from_package(Path(source), store, load_spec(spec).executor, trust_local=trust_local)
        elif selector:
            sub = from_image(source, selector)
        else:
            raise SubmissionError(f"{source}: not a package folder; for an image, name its selector with --selector")
        err.print(f"submission [bold]{escape(sub.label)}[/] from {escape(sub.source)}: conformance checks …")
        result = run_submission(spec, sub)
    except SubmissionError as e:
        err.print(f"[red]rejected:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    _report(result.out)
    _print_board(result.board, result.spec.columns)
    console.print(f"report: [bold]{result.out / 'report' / 'index.html'}[/]")


def runner_store(spec: Path) -> Path:
    from selbench.harness.spec import load_spec

    try:
        return load_spec(spec).resolved(Path.cwd()).store
    except ValueError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None


if __name__ == "__main__":  # pragma: no cover
    app()
