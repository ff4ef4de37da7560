"""SQLModel tables of the lineage store (DESIGN §3). The schema itself is built by `migrations`."""

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

KINDS = ("train", "finetune", "prune", "eval", "bench", "cell", "predict", "import", "export",
         "profile")
STATUSES = ("pending", "running", "completed", "failed", "interrupted")
TERMINAL_STATUSES = ("completed", "failed", "interrupted")
RELATIONS = ("pruned-from", "finetuned-from", "evaluates", "baseline-of", "cell-of", "step-of",
             "exported-from")
# Artifact kinds are free text; these are the ones the workflows write.
ARTIFACT_KINDS = ("checkpoint", "last-checkpoint", "report", "plot", "confusion", "widths", "summary",
                  "export", "latency-table")

UTC_DATETIME = DateTime(timezone=True)


def check_choice(value: str, allowed: tuple[str, ...] | list[str], what: str) -> None:
    """ConfigError naming the allowed values unless `value` is one of them."""
    if value not in allowed:
        from vss_cli.errors import ConfigError

        raise ConfigError(f"unknown {what} '{value}': use one of {', '.join(allowed)}")


class RunRecord(SQLModel, table=True):
    """One unit of work. `config` is canonical JSON and never changes once written."""

    __tablename__ = "run"

    id: str = Field(primary_key=True, max_length=32)
    kind: str = Field(index=True, max_length=32)
    status: str = Field(index=True, max_length=16)
    name: str | None = Field(default=None, sa_type=Text)
    config: str = Field(sa_type=Text)
    config_key: str = Field(index=True, max_length=64)
    created_at: datetime = Field(sa_type=UTC_DATETIME, index=True)
    started_at: datetime | None = Field(default=None, sa_type=UTC_DATETIME)
    finished_at: datetime | None = Field(default=None, sa_type=UTC_DATETIME)
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTC_DATETIME)
    worker: str | None = Field(default=None, sa_type=Text)
    attempt: int = 0
    error: str | None = Field(default=None, sa_type=Text)
    versions: str | None = Field(default=None, sa_type=Text)
    out_dir: str | None = Field(default=None, sa_type=Text)


class EdgeRecord(SQLModel, table=True):
    """parent run -> child run, with the relation that links them."""

    __tablename__ = "edge"
    __table_args__ = (
        UniqueConstraint("parent_id", "child_id", "relation", name="uq_edge_parent_child_relation"),
    )

    id: int | None = Field(default=None, primary_key=True)
    parent_id: str = Field(foreign_key="run.id", index=True, max_length=32)
    child_id: str = Field(foreign_key="run.id", index=True, max_length=32)
    relation: str = Field(max_length=32)
    created_at: datetime = Field(sa_type=UTC_DATETIME)


class ArtifactRecord(SQLModel, table=True):
    """A file a run wrote, with its absolute path, sha256 and size at the time it was recorded."""

    __tablename__ = "artifact"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True, max_length=32)
    kind: str = Field(max_length=32)
    path: str = Field(sa_type=Text)
    sha256: str = Field(max_length=64)
    bytes: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(sa_type=UTC_DATETIME)


class MetricRecord(SQLModel, table=True):
    """One measured value; append-only, so a key may have one row per step."""

    __tablename__ = "metric"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True, max_length=32)
    key: str = Field(max_length=128)
    value: float
    step: int | None = None
    created_at: datetime = Field(sa_type=UTC_DATETIME)


class MigrationRecord(SQLModel, table=True):
    """A migration applied to this database."""

    __tablename__ = "migrations"

    name: str = Field(primary_key=True, max_length=128)
    applied_at: datetime = Field(sa_type=UTC_DATETIME)
