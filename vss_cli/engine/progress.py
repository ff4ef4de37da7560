"""Rich progress on stderr for epochs, batches and grid cells (silent with --quiet or off a terminal)."""

from __future__ import annotations

import contextlib
import os

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_console = Console(stderr=True)


def quiet() -> bool:
    return os.environ.get("VSS_QUIET") == "1"


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=_console,
        transient=True,
        disable=quiet(),
    )


class _NullTask:
    def advance(self, *_a, **_k):
        pass


@contextlib.contextmanager
def progress_bar(description: str, total: int | None):
    """A single progress bar; yields `update(advance=1, info='')`."""
    with make_progress() as prog:
        task = prog.add_task(description, total=total, info="")

        def update(advance: int = 1, info: str = "") -> None:
            prog.update(task, advance=advance, info=info)

        yield update


def log(message: str) -> None:
    """A status line on stderr (suppressed by --quiet)."""
    if not quiet():
        _console.print(message, highlight=False)
