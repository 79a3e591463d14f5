"""Console output and progress bars (rich), shared by every command.

Progress goes to stderr so stdout stays clean for tables and paths; it hides itself when stderr
is not a terminal or ``CURATE_NO_PROGRESS`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


def progress_enabled() -> bool:
    return err_console.is_terminal and not os.environ.get("CURATE_NO_PROGRESS")


def make_progress(*, transient: bool = False) -> Progress:
    """A rich ``Progress`` on stderr with the project's columns."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=not progress_enabled(),
    )


def track(items: Iterable[T], *, description: str, total: float | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


def info(message: str) -> None:
    """A status line on stderr."""
    err_console.print(message, highlight=False, soft_wrap=True)  # never split paths across lines
