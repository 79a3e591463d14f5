"""Console output and progress bars (rich), shared by every command.

Progress goes to stderr so stdout stays clean for tables and paths; it hides itself when stderr
is not a terminal or ``CURATE_NO_PROGRESS`` is set. rich is imported on first need: a command
whose stderr is a pipe or a file prints its status lines without it (a one-caption ``curate
match`` spends about a tenth of its start-up importing rich).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

T = TypeVar("T")

# environment variables with which rich treats a stream that is not a TTY as a terminal
_FORCE = ("FORCE_COLOR", "FORCE_TERMINAL", "TTY_INTERACTIVE", "TTY_COMPATIBLE")
_consoles: dict[bool, Console] = {}
# what rich would change in a status line: markup, emoji codes (":name:"), tabs, control characters
_RICH_SYNTAX = re.compile(r"[\[\t\x00-\x1f\x7f]|:\S*?:")


def _console(stderr: bool) -> Console:
    if stderr not in _consoles:
        from rich.console import Console

        _consoles[stderr] = Console(stderr=stderr)
    return _consoles[stderr]


def __getattr__(name: str):  # ``console`` / ``err_console``, made on first use
    if name == "console":
        return _console(False)
    if name == "err_console":
        return _console(True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def print_frame(df, *, header: bool = True) -> None:
    """A table as a command's answer, on stdout, every row and every character of it: aligned
    columns on a terminal, tab-separated values with a header line in a pipe or a file (what
    ``cut``, ``sort`` or a spreadsheet reads; ``header=False``: rows that continue a table
    printed before)."""
    import polars as pl

    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        sys.stdout.write(df.write_csv(separator="\t", include_header=header))
        sys.stdout.flush()
        return
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=200, tbl_width_chars=10_000, tbl_hide_dataframe_shape=True):
        sys.stdout.write(f"{df}\n")
    sys.stdout.flush()


def _plain_stderr() -> bool:
    """True when rich would print to stderr as plain text (not a terminal, nothing forcing one)."""
    if True in _consoles:
        return not _consoles[True].is_terminal
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return not tty and not any(os.environ.get(k) for k in _FORCE) and "ipykernel" not in sys.modules


def progress_enabled() -> bool:
    if os.environ.get("CURATE_NO_PROGRESS") or _plain_stderr():
        return False
    return _console(True).is_terminal


def make_progress(*, transient: bool = False) -> Progress:
    """A rich ``Progress`` on stderr with the project's columns."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_console(True),
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
    """A status line on stderr (never split across lines: paths stay whole)."""
    if sys.stderr is None:  # no stderr at all (pythonw, some daemons): rich would write nowhere too
        return
    if _plain_stderr() and not _RICH_SYNTAX.search(message):
        # what rich writes for such a line on a stream that is not a terminal: the text as it is
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        return
    _console(True).print(message, highlight=False, soft_wrap=True)
