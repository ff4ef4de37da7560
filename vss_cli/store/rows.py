"""Plain, detached rows that the store returns (frozen dataclasses; no session attached)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vss_cli.store.tables import TERMINAL_STATUSES

# A running run whose heartbeat is older than this shows as `stale` (its process likely died).
STALE_AFTER_S = 300.0


def utc(value: datetime | None) -> datetime | None:
    """Attach UTC to the naive datetimes SQLite hands back (everything is stored in UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def _jsonable(row: Any) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(row).items()}


@dataclass(frozen=True)
class Run:
    """A run as stored; `config` and `versions` are decoded from their JSON columns."""

    id: str
    kind: str
    status: str
    name: str | None
    config: dict[str, Any]
    config_key: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    worker: str | None
    attempt: int
    error: str | None
    versions: dict[str, Any] | None
    out_dir: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Run:
        """From the run table's columns in table order: a `select(RUN)` row, or a slice of a wider row
        (`tests/test_store.py` holds the table's column order to this dataclass's field order)."""
        return cls._decoded(dict(zip(_RUN_FIELDS, row, strict=True)))

    @classmethod
    def from_record(cls, rec: Any) -> Run:
        """From a mapping (or a Core row) with the run table's columns, looked up by name."""
        mapping = getattr(rec, "_mapping", rec)
        return cls._decoded({name: mapping[name] for name in _RUN_FIELDS})

    @classmethod
    def _decoded(cls, values: dict[str, Any]) -> Run:
        """A run from its columns. `config` and `versions` stay JSON text until first read (see
        `__getattr__`); the frozen dataclass's __init__, which sets 15 fields one object.__setattr__
        at a time, is skipped by filling its __dict__ at once (listings build 10 000 of these)."""
        for key in _RUN_TIMES:
            values[key] = utc(values[key])
        for field_name, raw_name in _JSON_FIELDS.items():
            values[raw_name] = values.pop(field_name)
        run = object.__new__(cls)
        run.__dict__.update(values)
        return run

    def __getattr__(self, name: str) -> Any:
        """Decode `config` / `versions` on first read and keep the result (only called for attributes
        not in __dict__): a 10 000-run listing that shows no config never parses 4 MB of JSON."""
        raw_name = _JSON_FIELDS.get(name)
        if raw_name is None or raw_name not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        raw = self.__dict__[raw_name]
        value = json.loads(raw) if raw else ({} if name == "config" else None)
        self.__dict__[name] = value
        return value

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish, or to now while the run is still going; None if never started."""
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(timezone.utc)
        return (end - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (ISO 8601 times)."""
        return _jsonable(self)

    def display_status(self, now: datetime | None = None, stale_after_s: float = STALE_AFTER_S) -> str:
        """The status to show: `stale` for a running run whose heartbeat is older than `stale_after_s`
        (derived for display; the stored status stays `running` until a worker reclaims the run)."""
        if self.status != "running" or self.heartbeat_at is None:
            return self.status
        age = ((now or datetime.now(timezone.utc)) - self.heartbeat_at).total_seconds()
        return "stale" if age > stale_after_s else self.status


_RUN_FIELDS = tuple(f.name for f in fields(Run))
_JSON_FIELDS = {"config": "_config_json", "versions": "_versions_json"}  # field -> its JSON text, until read
_RUN_TIMES = ("created_at", "started_at", "finished_at", "heartbeat_at")


@dataclass(frozen=True)
class Artifact:
    """A recorded file: absolute path, sha256 and size when it was recorded."""

    id: int
    run_id: str
    kind: str
    path: Path
    sha256: str
    bytes: int
    created_at: datetime

    @classmethod
    def from_record(cls, rec: Any) -> Artifact:
        """From a Core row (or a mapping) with the artifact table's columns."""
        m = getattr(rec, "_mapping", rec)
        return cls(m["id"], m["run_id"], m["kind"], Path(m["path"]), m["sha256"], m["bytes"], utc(m["created_at"]))

    def to_dict(self) -> dict[str, Any]:
        return {**_jsonable(self), "path": str(self.path)}


@dataclass(frozen=True)
class Metric:
    """One appended metric value."""

    id: int
    run_id: str
    key: str
    value: float
    step: int | None
    created_at: datetime

    @classmethod
    def from_record(cls, rec: Any) -> Metric:
        return cls(rec.id, rec.run_id, rec.key, rec.value, rec.step, utc(rec.created_at))

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True)
class LineageNode:
    """A run reached from another by `relation`; `nodes` continue in the same direction."""

    relation: str
    run: Run
    nodes: tuple[LineageNode, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "relation": self.relation,
            "run": self.run.id,
            "kind": self.run.kind,
            "status": self.run.status,
            "nodes": [n.to_dict() for n in self.nodes],
        }


@dataclass(frozen=True)
class Lineage:
    """A run with its ancestors (each node's `nodes` are its parents) and descendants (its children)."""

    run: Run
    ancestors: tuple[LineageNode, ...]
    descendants: tuple[LineageNode, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run.id,
            "ancestors": [n.to_dict() for n in self.ancestors],
            "descendants": [n.to_dict() for n in self.descendants],
        }
