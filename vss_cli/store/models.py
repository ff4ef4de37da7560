"""The lineage store's schema (DESIGN §3), defined once, as SQLModel models.

Each table has a field class (`RunFields`, `ArtifactFields`, `MetricFields`: the columns, their types,
nullability and single-column indexes) and a table model built on it (`RunRecord`, `EdgeRecord`,
`ArtifactRecord`, `MetricRecord`, `MigrationRecord`: the tables, with their composite indexes and
constraints). The rows the store hands out (`vss_cli.store.rows`) are read models that subclass the same
field classes, so a column is declared in one place. Hot reads and writes run Core statements on
`RunRecord.__table__` and friends (`vss_cli.store.tables` names them); `tests/test_store.py` checks these
tables against what the migrations build, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

RUN_ID_LENGTH = 32  # sortable run ids (see identity.new_run_id)


def _time(**kw: Any) -> Any:
    """A timezone-aware timestamp column (everything is stored in UTC)."""
    return Field(sa_type=DateTime(timezone=True), **kw)


def _text(**kw: Any) -> Any:
    """An unbounded, nullable text column."""
    return Field(default=None, sa_type=Text, **kw)


def _run_ref(**kw: Any) -> Any:
    """A column naming a run (foreign key to run.id), indexed."""
    return Field(foreign_key="run.id", max_length=RUN_ID_LENGTH, index=True, **kw)


class RunFields(SQLModel):
    """One unit of work. `config` (canonical JSON, never changed once written) and `versions` are JSON
    text; the read model decodes them (`Run.config`, `Run.versions`)."""

    id: str = Field(primary_key=True, max_length=RUN_ID_LENGTH)
    kind: str = Field(max_length=32, index=True)
    status: str = Field(max_length=16, index=True)
    name: str | None = _text()
    config_json: str = Field(sa_type=Text, sa_column_kwargs={"name": "config"})
    config_key: str = Field(max_length=64, index=True)
    created_at: datetime = _time(index=True)
    started_at: datetime | None = _time(default=None)
    finished_at: datetime | None = _time(default=None)
    heartbeat_at: datetime | None = _time(default=None)
    worker: str | None = _text()
    attempt: int = 0
    error: str | None = _text()
    versions_json: str | None = _text(sa_column_kwargs={"name": "versions"})
    out_dir: str | None = _text()


class RunRecord(RunFields, table=True):
    __tablename__ = "run"
    __table_args__ = (
        Index("ix_run_kind_created_at", "kind", "created_at"),
        Index("ix_run_status_heartbeat_at", "status", "heartbeat_at"),
    )


class EdgeRecord(SQLModel, table=True):
    """parent run -> child run, with the relation that links them."""

    __tablename__ = "edge"
    __table_args__ = (
        UniqueConstraint("parent_id", "child_id", "relation", name="uq_edge_parent_child_relation"),
        Index("ix_edge_parent_relation", "parent_id", "relation"),
        Index("ix_edge_child_relation", "child_id", "relation"),
    )

    id: int | None = Field(default=None, primary_key=True)
    parent_id: str = _run_ref()
    child_id: str = _run_ref()
    relation: str = Field(max_length=32)
    created_at: datetime = _time()


class ArtifactFields(SQLModel):
    """A file a run wrote, with its absolute path, sha256 and size at the time it was recorded."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = _run_ref()
    kind: str = Field(max_length=32)
    path: str = Field(sa_type=Text, index=True)
    sha256: str = Field(max_length=64)
    bytes: int = Field(sa_type=BigInteger)
    created_at: datetime = _time()


class ArtifactRecord(ArtifactFields, table=True):
    __tablename__ = "artifact"


class MetricFields(SQLModel):
    """One measured value; append-only, so a key may have one row per step."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = _run_ref()
    key: str = Field(max_length=128)
    value: float
    step: int | None = None
    created_at: datetime = _time()


class MetricRecord(MetricFields, table=True):
    __tablename__ = "metric"
    __table_args__ = (Index("ix_metric_run_key_id", "run_id", "key", "id"),)


class MigrationRecord(SQLModel, table=True):
    """A migration applied to this database."""

    __tablename__ = "migrations"

    name: str = Field(primary_key=True, max_length=128)
    applied_at: datetime = _time()
