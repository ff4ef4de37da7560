"""Progress on stderr for epochs, batches and grid cells.

On a terminal: Rich bars. Off a terminal (a cluster job's log file): no bars at all, one plain line
per epoch (`epoch_line`) and per grid cell (`progress_bar`), never wrapped. `--quiet` silences both;
the CLI sets it with `configure(quiet=True)` (`VSS_QUIET=1` in the environment does the same, for
tests and child processes).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

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


@dataclass
class ProgressSettings:
    """How progress is shown; `plain=None` means plain exactly when stderr is not a terminal."""

    quiet: bool = False
    plain: bool | None = None


SETTINGS = ProgressSettings()


def configure(*, quiet: bool | None = None, plain: bool | None = None) -> ProgressSettings:
    """Set the progress mode (the CLI's `--quiet`); returns the settings."""
    if quiet is not None:
        SETTINGS.quiet = quiet
    if plain is not None:
        SETTINGS.plain = plain
    return SETTINGS


def quiet() -> bool:
    return SETTINGS.quiet or os.environ.get("VSS_QUIET") == "1"


def plain() -> bool:
    """One line per step instead of bars (stderr is a file or a pipe)."""
    if SETTINGS.plain is not None:
        return SETTINGS.plain
    return not sys.stderr.isatty()


class PlainProgress:
    """The part of Rich's `Progress` API the engine uses, printing nothing: batch bars in a log file
    are noise; the per-epoch and per-cell lines carry the numbers."""

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **_fields) -> int:
        return 0

    def update(self, task: int, **_fields) -> None:
        pass

    def advance(self, task: int, advance: float = 1) -> None:
        pass

    def remove_task(self, task: int) -> None:
        pass


def make_progress() -> Progress | PlainProgress:
    if quiet() or plain():
        return PlainProgress()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=_console,
        transient=True,
    )


@contextlib.contextmanager
def progress_bar(description: str, total: int | None):
    """A single progress bar; yields `update(advance=1, info='')`. Off a terminal every update with
    an advance is one line: `description done/total info`."""
    if quiet() or plain():
        done = 0

        def update_line(advance: int = 1, info: str = "") -> None:
            nonlocal done
            done += advance
            if advance:
                log(f"{description} {done}/{total if total is not None else '?'} {info}".rstrip())

        yield update_line
        return
    with make_progress() as prog:
        task = prog.add_task(description, total=total, info="")

        def update(advance: int = 1, info: str = "") -> None:
            prog.update(task, advance=advance, info=info)

        yield update


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


EPOCH_KEYS = ("train_loss", "val_miou", "val_pixel_accuracy", "lr", "epoch_seconds")


def epoch_line(epoch: int, epochs: int, scalars: dict, keys: tuple[str, ...] = EPOCH_KEYS) -> str:
    """`epoch 2/10 train_loss 0.512 val_miou 0.231 lr 0.00981 epoch_seconds 12.3`: the key numbers."""
    parts = [f"epoch {epoch + 1}/{epochs}"]
    parts += [f"{k} {_number(scalars[k])}" for k in keys if k in scalars and scalars[k] is not None]
    return " ".join(parts)


def log_epoch(epoch: int, epochs: int, scalars: dict) -> None:
    """The one line an epoch leaves in the log (above the bars on a terminal)."""
    log(epoch_line(epoch, epochs, scalars))


def log(message: str) -> None:
    """A status line on stderr (suppressed by --quiet), never wrapped."""
    if not quiet():
        _console.print(message, highlight=False, markup=False, soft_wrap=True)
