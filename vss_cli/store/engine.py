"""Engines for the lineage store: URL handling, SQLite pragmas, write transactions, lock retries.

SQLite is opened in WAL mode with a 30 s busy timeout and foreign keys on. Every write transaction
starts with `BEGIN IMMEDIATE`, so concurrent writers queue on the busy timeout instead of failing
with "database is locked" when a read transaction tries to upgrade; a few retries are the backstop.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

T = TypeVar("T")

BUSY_TIMEOUT_S = 30.0
LOCK_RETRIES = 5
WRITE_OPTION = "vss_write"  # execution option that makes the next BEGIN an IMMEDIATE one


def database_url(url_or_path: str | Path) -> str:
    """A SQLAlchemy URL for a path or URL; creates the parent folder of a SQLite file."""
    text = str(url_or_path)
    if "://" not in text:
        path = Path(text).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    database = make_url(text).database
    if text.startswith("sqlite") and database and database != ":memory:":
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    return text


def _sqlite_connect(dbapi_connection, _record) -> None:
    """Hand transaction control to SQLAlchemy and set the pragmas every connection needs."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    _ensure_wal(cursor)
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _ensure_wal(cursor) -> None:
    """Switch the file to WAL once (the mode persists in the file). Switching needs an exclusive lock
    that SQLite may refuse at once while another process opens the same new database, so retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() and "busy" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.02 + 0.05 * random.random())


def _sqlite_begin(conn: Connection) -> None:
    """Emit BEGIN ourselves: IMMEDIATE for writes (takes the write lock up front), deferred for reads."""
    immediate = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url_or_path: str | Path) -> Engine:
    """Create the engine; SQLite gets the pragmas and BEGIN handling described above."""
    url = database_url(url_or_path)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def is_lock_error(exc: OperationalError) -> bool:
    """True for the transient errors another writer causes (SQLite busy/locked, PostgreSQL deadlock)."""
    message = str(exc.orig).lower()
    return any(word in message for word in ("locked", "busy", "deadlock"))


def retry_locked(fn: Callable[[], T], *, retries: int = LOCK_RETRIES) -> T:
    """Call `fn` (a whole transaction), retrying with jittered backoff when the database is locked."""
    for attempt in range(1, retries):
        try:
            return fn()
        except OperationalError as exc:
            if not is_lock_error(exc):
                raise
            time.sleep(0.05 * 2**attempt * (1 + random.random()))
    return fn()


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a write transaction (`BEGIN IMMEDIATE` on SQLite), committed on exit."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            yield conn
