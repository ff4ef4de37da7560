"""Named schema migrations, applied in order when the store is opened and recorded in `migrations`.

As in simonw/llm: each migration is a small function registered with `@migration`; a database
records the names it has applied, so opening it again applies nothing. A migration spells out its
own DDL (never the current models), because it describes the schema as it was at that step.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
    text,
)

from vss_cli.store.engine import retry_locked, write_connection
from vss_cli.store.tables import MIGRATIONS as _MIGRATIONS_TABLE

Migration = Callable[[Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register `fn` as the next migration; its function name is its recorded name."""
    MIGRATIONS.append(fn)
    return fn


def _time() -> DateTime:
    return DateTime(timezone=True)


@migration
def m001_initial(conn: Connection) -> None:
    """run, edge, artifact and metric tables with their lookup indexes."""
    md = MetaData()
    Table(
        "run", md,
        Column("id", String(32), primary_key=True),
        Column("kind", String(32), nullable=False),
        Column("status", String(16), nullable=False),
        Column("name", Text),
        Column("config", Text, nullable=False),
        Column("config_key", String(64), nullable=False),
        Column("created_at", _time(), nullable=False),
        Column("started_at", _time()),
        Column("finished_at", _time()),
        Column("heartbeat_at", _time()),
        Column("worker", Text),
        Column("attempt", Integer, nullable=False),
        Column("error", Text),
        Column("versions", Text),
        Column("out_dir", Text),
        Index("ix_run_kind", "kind"),
        Index("ix_run_status", "status"),
        Index("ix_run_config_key", "config_key"),
        Index("ix_run_created_at", "created_at"),
    )  # fmt: skip
    Table(
        "edge", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("parent_id", String(32), ForeignKey("run.id"), nullable=False),
        Column("child_id", String(32), ForeignKey("run.id"), nullable=False),
        Column("relation", String(32), nullable=False),
        Column("created_at", _time(), nullable=False),
        UniqueConstraint("parent_id", "child_id", "relation", name="uq_edge_parent_child_relation"),
        Index("ix_edge_parent_id", "parent_id"),
        Index("ix_edge_child_id", "child_id"),
    )  # fmt: skip
    Table(
        "artifact", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(32), ForeignKey("run.id"), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("path", Text, nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("bytes", BigInteger, nullable=False),
        Column("created_at", _time(), nullable=False),
        Index("ix_artifact_run_id", "run_id"),
    )  # fmt: skip
    Table(
        "metric", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(32), ForeignKey("run.id"), nullable=False),
        Column("key", String(128), nullable=False),
        Column("value", Float, nullable=False),
        Column("step", Integer),
        Column("created_at", _time(), nullable=False),
        Index("ix_metric_run_id", "run_id"),
    )  # fmt: skip
    md.create_all(conn)


@migration
def m002_scale_indexes(conn: Connection) -> None:
    """Indexes for listing, lineage and clean-up at research scale (issue 13): latest metrics per run
    and key, edges by parent and relation, runs by kind and time or status and heartbeat, artifacts
    by path (shared-file checks)."""
    for name, table, columns in (
        ("ix_metric_run_key_id", "metric", "run_id, key, id"),
        ("ix_edge_parent_relation", "edge", "parent_id, relation"),
        ("ix_edge_child_relation", "edge", "child_id, relation"),
        ("ix_run_kind_created_at", "run", "kind, created_at"),
        ("ix_run_status_heartbeat_at", "run", "status, heartbeat_at"),
        ("ix_artifact_path", "artifact", "path"),
    ):
        conn.execute(text(f"CREATE INDEX {name} ON {table} ({columns})"))


def applied_migrations(conn: Connection) -> list[str]:
    """Names of the migrations this database has recorded, in the order they were applied."""
    if not inspect(conn).has_table(_MIGRATIONS_TABLE.name):
        return []
    query = select(_MIGRATIONS_TABLE.c.name).order_by(
        _MIGRATIONS_TABLE.c.applied_at, _MIGRATIONS_TABLE.c.name
    )
    return list(conn.execute(query).scalars())


def _pending(conn: Connection) -> list[Migration]:
    done = set(applied_migrations(conn))
    return [fn for fn in MIGRATIONS if fn.__name__ not in done]


def _apply_pending(engine: Engine) -> list[str]:
    """In one write transaction (so concurrent openers wait for each other), apply what is missing."""
    with write_connection(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7357001)"))
        _MIGRATIONS_TABLE.create(conn, checkfirst=True)
        names = []
        for fn in _pending(conn):
            fn(conn)
            conn.execute(
                _MIGRATIONS_TABLE.insert().values(name=fn.__name__, applied_at=datetime.now(timezone.utc))
            )
            names.append(fn.__name__)
        return names


def migrate(engine: Engine) -> list[str]:
    """Bring the database up to date; returns the names applied now (none when already current)."""
    with engine.connect() as conn:
        if not _pending(conn):  # the common case: a read, no write lock
            return []
    return retry_locked(lambda: _apply_pending(engine))
