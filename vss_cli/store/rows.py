"""The rows the store hands out: read models of the SQLModel field classes in `models` (so their columns
are declared once), detached from any session and frozen, plus the lineage trees built from them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ConfigDict

from vss_cli.store.models import ArtifactFields, MetricFields, RunFields
from vss_cli.store.tables import RUN, TERMINAL_STATUSES

# A running run whose heartbeat is older than this shows as `stale` (its process likely died).
STALE_AFTER_S = 300.0


def utc(value: datetime | None) -> datetime | None:
    """Attach UTC to the naive datetimes SQLite hands back (everything is stored in UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}


class Run(RunFields):
    """A run as stored: the `run` table's columns (`models.RunFields`), read-only. `config` and
    `versions` are decoded from their JSON columns (`config_json`, `versions_json`) on first read."""

    model_config = ConfigDict(frozen=True)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Run:
        """From the run table's columns in table order: a `select(RUN)` row, or a slice of a wider row
        (`tests/test_store.py` holds the table's column order to the field order)."""
        return cls._built(dict(zip(_RUN_FIELDS, row, strict=True)))

    @classmethod
    def from_record(cls, rec: Any) -> Run:
        """From a mapping (or a Core row) with the run table's columns, looked up by column name."""
        mapping = getattr(rec, "_mapping", rec)
        return cls._built({name: mapping[column] for name, column in zip(_RUN_FIELDS, _RUN_COLUMNS, strict=True)})

    @classmethod
    def _built(cls, values: dict[str, Any]) -> Run:
        """A run from column values that the database already checked, without pydantic's per-field
        validation (what `model_construct` does, minus its per-field default lookups: listings build
        10 000 of these)."""
        for key in _RUN_TIMES:
            values[key] = utc(values[key])
        run = object.__new__(cls)
        object.__setattr__(run, "__dict__", values)
        object.__setattr__(run, "__pydantic_fields_set__", set(_RUN_FIELDS))
        object.__setattr__(run, "__pydantic_extra__", None)
        object.__setattr__(run, "__pydantic_private__", None)
        return run

    @cached_property
    def config(self) -> dict[str, Any]:
        """The decoded config (parsed once, on first read: a 10 000-run listing that shows no config
        never parses 4 MB of JSON)."""
        return json.loads(self.config_json) if self.config_json else {}

    @cached_property
    def versions(self) -> dict[str, Any] | None:
        return json.loads(self.versions_json) if self.versions_json else None

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
        """JSON-ready columns, named as in the table, with `config` and `versions` decoded (ISO 8601 times)."""
        decoded = {"config_json": self.config, "versions_json": self.versions}
        return _jsonable({column: decoded.get(name, self.__dict__[name])
                          for name, column in zip(_RUN_FIELDS, _RUN_COLUMNS, strict=True)})

    def display_status(self, now: datetime | None = None, stale_after_s: float = STALE_AFTER_S) -> str:
        """The status to show: `stale` for a running run whose heartbeat is older than `stale_after_s`
        (derived for display; the stored status stays `running` until a worker reclaims the run)."""
        if self.status != "running" or self.heartbeat_at is None:
            return self.status
        age = ((now or datetime.now(timezone.utc)) - self.heartbeat_at).total_seconds()
        return "stale" if age > stale_after_s else self.status


_RUN_FIELDS = tuple(RunFields.model_fields)
_RUN_COLUMNS = tuple(RUN.c.keys())  # the same order (tested); config_json -> config, versions_json -> versions
_RUN_TIMES = ("created_at", "started_at", "finished_at", "heartbeat_at")


class Artifact(ArtifactFields):
    """A recorded file (`models.ArtifactFields`): absolute path, sha256 and size when it was recorded."""

    model_config = ConfigDict(frozen=True)

    id: int
    path: Path

    @classmethod
    def from_record(cls, rec: Any) -> Artifact:
        """From a Core row (or a mapping) with the artifact table's columns."""
        m = getattr(rec, "_mapping", rec)
        values = {name: m[name] for name in cls.model_fields}
        return cls.model_construct(**{**values, "path": Path(values["path"]), "created_at": utc(values["created_at"])})

    def to_dict(self) -> dict[str, Any]:
        return {**_jsonable(dict(self)), "path": str(self.path)}


class Metric(MetricFields):
    """One appended metric value (`models.MetricFields`)."""

    model_config = ConfigDict(frozen=True)

    id: int

    @classmethod
    def from_record(cls, rec: Any) -> Metric:
        m = getattr(rec, "_mapping", rec)
        values = {name: m[name] for name in cls.model_fields}
        return cls.model_construct(**{**values, "created_at": utc(values["created_at"])})

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dict(self))


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
