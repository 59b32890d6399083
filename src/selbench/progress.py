"""Rich progress bars for long work (training, extraction), quiet when stderr is not a terminal and in CI."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def _enabled() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI") and not os.environ.get("SELBENCH_NO_PROGRESS")


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """Yields ``advance(n=1, total=None, info="")``; a no-op when progress display is off."""
    if not _enabled():
        yield lambda *a, **k: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console,
                  transient=False) as p:
        task = p.add_task(description, total=total, info="")

        def advance(n: int = 1, total: int | None = None, info: str = "") -> None:
            if total is not None:
                p.update(task, total=total)
            p.update(task, advance=n, info=info)

        yield advance
