"""Rendering a screen as a terminal of a given width shows it, or as a log file (off a terminal).

`as_terminal(monkeypatch, 80)` makes vss's consoles behave as on an 80-column terminal (Rich's
`TTY_COMPATIBLE=1` and `COLUMNS`); `plain(text)` drops the escape codes a terminal gets.
"""

from __future__ import annotations

import re

import pytest

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def as_terminal(monkeypatch: pytest.MonkeyPatch, columns: int = 80) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setenv("NO_COLOR", "1")


def plain(text: str) -> str:
    return ANSI.sub("", text)


def widest(text: str) -> int:
    return max((len(line) for line in plain(text).splitlines()), default=0)
