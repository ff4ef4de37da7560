"""Small formatting helpers shared by commands that show runs (times, durations, ids, nested dicts)."""

from __future__ import annotations

import bisect
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from rich import box
from rich.table import Table

from vss_cli.cli.output import console
from vss_cli.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MIN_ABBREV = 8


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


def fmt_age(seconds: float | None) -> str:
    """How long ago, compactly: `42s`, `12m`, `5h`, `3d`, `6w`; empty for None."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    for unit, size, limit in (("s", 1, 60), ("m", 60, 3600), ("h", 3600, 86400), ("d", 86400, 14 * 86400)):
        if seconds < limit:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds // _UNITS['w'])}w"


def fmt_bytes(n: int) -> str:
    """`512 B`, `3.4 KB`, `1.2 GB` (powers of 1024)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def parse_duration(text: str, option: str) -> float:
    """Seconds in `90s`, `30m`, `12h`, `7d`, `2w` (or a plain number of seconds); ConfigError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not match:
        raise ConfigError(f"{option} '{text}' is not a duration: use e.g. 90s, 30m, 12h, 7d or 2w")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a duration back from now (`7d`) or an ISO date/time (`2024-05-01`, UTC unless given)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        seconds = parse_duration(text, "--since")
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:
            raise ConfigError(f"--since '{text}' reaches back before year 1: use a shorter duration or a date such "
                              "as 2024-05-01") from None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def abbreviations(ids: Sequence[str], all_ids: Sequence[str], min_len: int = MIN_ABBREV) -> dict[str, str]:
    """The shortest prefix of each id (at least `min_len` characters) that no other id in the sorted
    `all_ids` shares, like git's short hashes, so every shown id can be typed back."""
    out = {}
    for run_id in ids:
        pos = bisect.bisect_left(all_ids, run_id)
        common = 0
        for other in (all_ids[pos - 1] if pos > 0 else "", all_ids[pos + 1] if pos + 1 < len(all_ids) else ""):
            common = max(common, len(_common_prefix(run_id, other)))
        out[run_id] = run_id[: max(min_len, common + 1)]
    return out


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


@dataclass(frozen=True)
class TableColumn:
    """A column of a fitted table: `keep` columns are never cut (they get their content's width);
    the others shrink with an ellipsis, never wrap."""

    name: str
    keep: bool = False
    justify: str = "left"


def fit_widths(natural: Sequence[int], keep: Sequence[bool], floor: Sequence[int], total: int) -> list[int]:
    """Column widths that sum to at most `total`: kept columns at their natural width, the others
    shrunk (never below `floor`) in proportion to what they would take beyond it."""
    widths = list(natural)
    budget = total - sum(w for w, k in zip(natural, keep, strict=True) if k)
    flex = [i for i, k in enumerate(keep) if not k]
    if sum(natural[i] for i in flex) <= budget:
        return widths
    spare = max(0, budget - sum(min(natural[i], floor[i]) for i in flex))
    extra = sum(natural[i] - min(natural[i], floor[i]) for i in flex) or 1
    for i in flex:
        base = min(natural[i], floor[i])
        widths[i] = base + (natural[i] - base) * spare // extra
    return widths


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def print_fitted_table(rows: Sequence[Sequence[str]], columns: Sequence[TableColumn], *, title: str | None = None) -> None:
    """One line per row at the terminal's width: kept columns whole, the others cut with `…`."""
    natural = [max([len(c.name), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    floor = [min(len(c.name), 6) for c in columns]
    widths = fit_widths(natural, [c.keep for c in columns], floor, console.width - 2 * (len(columns) - 1))
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True,
                  title_justify="left")
    for column, width in zip(columns, widths, strict=True):
        table.add_column(_cut(column.name, width), no_wrap=True, width=width, justify=column.justify)
    for row in rows:
        table.add_row(*(_cut(cell, width) for cell, width in zip(row, widths, strict=True)))
    console.print(table)
