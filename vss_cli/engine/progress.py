"""Progress on stderr for epochs, batches and grid cells.

On a terminal: Rich bars. Off a terminal (a cluster job's log file): no bars at all, one plain line
per epoch (`epoch_line`) and per tenth of a `progress_bar` (grid cells, oracle layers, scored
images), never wrapped. `--quiet` silences both;
the CLI sets it with `configure(quiet=True)` (`VSS_QUIET=1` in the environment does the same, for
tests and child processes).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vss_cli.consoles import make_console

_console = make_console(stderr=True)


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


def make_progress(*, rich_eta: bool = True) -> Progress | PlainProgress:
    """Rich bars (or nothing off a terminal); `rich_eta=False` leaves the time-remaining column out for a
    bar that shows its own estimate (Rich's forgets its rate after 30 s without an advance)."""
    if quiet() or plain():
        return PlainProgress()
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if rich_eta:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, TextColumn("{task.fields[info]}", markup=False), console=_console, transient=True)


PLAIN_EVERY_PCT = 10  # off a terminal, a progress_bar writes one line per this many percent of its total
ALREADY_DONE_S = 1.0  # advances within this long of the start are work found done (reused cells), not timed


def fmt_eta(seconds: float) -> str:
    """`42s`, `4m05s`, `2h03m`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Eta:
    """Time left from the rate of this process's own steps (steps found done at the start excluded)."""

    def __init__(self, total: int | None) -> None:
        self.total, self.start, self.done, self.base = total, time.monotonic(), 0, 0

    def advance(self, n: int) -> None:
        self.done += n
        if time.monotonic() - self.start < ALREADY_DONE_S:
            self.base = self.done

    def text(self) -> str:
        """`eta 4m05s`, or '' before the first timed step (or without a total)."""
        timed = self.done - self.base
        if not self.total or timed <= 0 or self.done >= self.total:
            return ""
        return "eta " + fmt_eta((time.monotonic() - self.start) / timed * (self.total - self.done))


@contextlib.contextmanager
def progress_bar(description: str, total: int | None):
    """A single progress bar with its own ETA; yields `update(advance=1, info='')`. Off a terminal it
    writes one line per PLAIN_EVERY_PCT percent of the total (every step when the total is unknown):
    `description done/total (pct%) eta 4m05s info`."""
    eta = Eta(total)
    if quiet() or plain():
        next_line = 0.0

        def update_line(advance: int = 1, info: str = "") -> None:
            nonlocal next_line
            eta.advance(advance)
            if not advance:
                return
            if total:
                if eta.done < next_line and eta.done < total:
                    return
                next_line = (eta.done * 100 // total // PLAIN_EVERY_PCT + 1) * PLAIN_EVERY_PCT * total / 100
                head = f"{description} {eta.done}/{total} ({eta.done / total:.0%})"
            else:
                head = f"{description} {eta.done}/?"
            log(" ".join(p for p in (head, eta.text(), info) if p))

        yield update_line
        return
    with make_progress(rich_eta=False) as prog:
        task = prog.add_task(description, total=total, info="")

        def update(advance: int = 1, info: str = "") -> None:
            eta.advance(advance)
            prog.update(task, advance=advance, info=" ".join(p for p in (eta.text(), info) if p))

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
