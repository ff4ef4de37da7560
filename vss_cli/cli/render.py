"""Small formatting helpers shared by commands that show runs (times, durations, ids, nested dicts)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from rich.table import Table

from vss_cli.cli.output import console


def short_id(run_id: str, n: int = 12) -> str:
    """The first `n` characters of a run id, with an ellipsis when cut."""
    return run_id if len(run_id) <= n else run_id[:n] + "…"


def fmt_time(value: datetime | None) -> str:
    """UTC time to the second, e.g. `2024-05-01 12:03:04`; empty for None."""
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(seconds: float | None) -> str:
    """`42.1s`, `4m05s` or `2h03m`; empty for None."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def write_json(obj: Any) -> None:
    """Write `obj` as indented JSON to stdout plainly (not through Rich), so it pipes."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def print_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, title: str, no_wrap: Sequence[str] = ()
) -> None:
    """A Rich table like `render_rows`, but the `no_wrap` columns (ids) are never cut on narrow terminals."""
    table = Table(title=title)
    for name in columns:
        table.add_column(name, no_wrap=name in no_wrap)
    for row in rows:
        table.add_row(*(_cell(row.get(name)) for name in columns))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
