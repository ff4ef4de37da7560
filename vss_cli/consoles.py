"""The Rich consoles vss prints through: terminal width on a terminal, no width limit off one.

Off a terminal (a log file, a pipe, a cluster job's output) a table is written at its natural width
and a line is never wrapped, so no number is cut or split; Rich's own default would be the width of
whatever terminal the job was started from (or 80). `TTY_COMPATIBLE=1` (Rich's switch) makes a
console behave as on a terminal, `COLUMNS` gives that terminal's width: tests render the 80-column
screens with both.
"""

from __future__ import annotations

from rich.console import Console, ConsoleDimensions

OFF_TERMINAL_WIDTH = 10_000  # wider than any table vss prints: off a terminal nothing is cut or folded


class WideOffTerminal(Console):
    """A Console whose width is unlimited when it does not write to a terminal."""

    @property
    def size(self) -> ConsoleDimensions:
        if not self.is_terminal:
            return ConsoleDimensions(OFF_TERMINAL_WIDTH, 25)
        return Console.size.fget(self)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


def make_console(*, stderr: bool = False, **options) -> Console:
    """A `WideOffTerminal` console (`options` as Rich's Console takes them, e.g. markup=False)."""
    return WideOffTerminal(stderr=stderr, **options)
