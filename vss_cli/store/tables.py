"""The lineage store's tables as it is now (DESIGN §3), in SQLAlchemy Core; `migrations` builds them.

Core, not an ORM: every query and write is a Core statement and rows come back as the plain
dataclasses of `rows`, so a read such as `vss runs list` imports neither `sqlalchemy.orm` nor
pydantic models (issue 13's start-up budget). `tests/test_store.py` checks these tables against
the migrated schema.
"""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

KINDS = ("train", "finetune", "prune", "eval", "bench", "cell", "predict", "import", "export",
         "profile")
STATUSES = ("pending", "running", "completed", "failed", "interrupted")
TERMINAL_STATUSES = ("completed", "failed", "interrupted")
RELATIONS = ("pruned-from", "finetuned-from", "evaluates", "baseline-of", "cell-of", "step-of",
             "exported-from")
# Artifact kinds are free text; these are the ones the workflows write.
ARTIFACT_KINDS = ("checkpoint", "last-checkpoint", "report", "plot", "confusion", "widths", "summary",
                  "export", "latency-table")

METADATA = MetaData()


def _utc() -> DateTime:
    return DateTime(timezone=True)


def check_choice(value: str, allowed: tuple[str, ...] | list[str], what: str) -> None:
    """ConfigError naming the allowed values unless `value` is one of them."""
    if value not in allowed:
        from vss_cli.errors import ConfigError

        raise ConfigError(f"unknown {what} '{value}': use one of {', '.join(allowed)}")


# One unit of work. `config` is canonical JSON and never changes once written.
RUN = Table(
    "run", METADATA,
    Column("id", String(32), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("name", Text),
    Column("config", Text, nullable=False),
    Column("config_key", String(64), nullable=False),
    Column("created_at", _utc(), nullable=False),
    Column("started_at", _utc()),
    Column("finished_at", _utc()),
    Column("heartbeat_at", _utc()),
    Column("worker", Text),
    Column("attempt", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("versions", Text),
    Column("out_dir", Text),
    Index("ix_run_kind", "kind"),
    Index("ix_run_status", "status"),
    Index("ix_run_config_key", "config_key"),
    Index("ix_run_created_at", "created_at"),
    Index("ix_run_kind_created_at", "kind", "created_at"),
    Index("ix_run_status_heartbeat_at", "status", "heartbeat_at"),
)  # fmt: skip

# parent run -> child run, with the relation that links them.
EDGE = Table(
    "edge", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("parent_id", String(32), ForeignKey("run.id"), nullable=False),
    Column("child_id", String(32), ForeignKey("run.id"), nullable=False),
    Column("relation", String(32), nullable=False),
    Column("created_at", _utc(), nullable=False),
    UniqueConstraint("parent_id", "child_id", "relation", name="uq_edge_parent_child_relation"),
    Index("ix_edge_parent_id", "parent_id"),
    Index("ix_edge_child_id", "child_id"),
    Index("ix_edge_parent_relation", "parent_id", "relation"),
    Index("ix_edge_child_relation", "child_id", "relation"),
)  # fmt: skip

# A file a run wrote, with its absolute path, sha256 and size at the time it was recorded.
ARTIFACT = Table(
    "artifact", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("run.id"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("path", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", _utc(), nullable=False),
    Index("ix_artifact_run_id", "run_id"),
    Index("ix_artifact_path", "path"),
)  # fmt: skip

# One measured value; append-only, so a key may have one row per step.
METRIC = Table(
    "metric", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("run.id"), nullable=False),
    Column("key", String(128), nullable=False),
    Column("value", Float, nullable=False),
    Column("step", Integer),
    Column("created_at", _utc(), nullable=False),
    Index("ix_metric_run_id", "run_id"),
    Index("ix_metric_run_key_id", "run_id", "key", "id"),
)  # fmt: skip

# A migration applied to this database.
MIGRATIONS = Table(
    "migrations", METADATA,
    Column("name", String(128), primary_key=True),
    Column("applied_at", _utc(), nullable=False),
)  # fmt: skip
