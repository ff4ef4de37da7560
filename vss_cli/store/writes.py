"""Row-level helpers of the store's write transactions: the time rows are stamped with, finite
metric values, multi-row metric inserts, and the one-statement check that parent runs exist."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import insert as insert_row
from sqlalchemy import select as select_sql

from vss_cli.errors import RunNotFound
from vss_cli.store.tables import METRIC, RUN


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number (numpy/torch scalars included), else None."""
    if isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def finite_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {key: v for key, value in metrics.items() if (v := finite(value)) is not None}


def insert_metrics(conn: Connection, run_id: str, values: Mapping[str, float], step: int | None, now: datetime) -> None:
    """One multi-row INSERT of metric rows."""
    if values:
        rows = [dict(run_id=run_id, key=k, value=v, step=step, created_at=now) for k, v in values.items()]
        conn.execute(insert_row(METRIC), rows)


def missing_run(conn: Connection, run_ids: Sequence[str]) -> RunNotFound | None:
    """RunNotFound naming the first of `run_ids` that is not in the store, or None (one statement)."""
    if not run_ids:
        return None
    found = set(conn.execute(select_sql(RUN.c.id).where(RUN.c.id.in_(list(run_ids)))).scalars())
    missing = [run_id for run_id in run_ids if run_id not in found]
    return RunNotFound(f"no run has id '{missing[0]}': see `vss runs list`") if missing else None
