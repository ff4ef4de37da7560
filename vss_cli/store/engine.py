"""Engines for the lineage store: URL handling, SQLite pragmas, write transactions, riding out faults.

SQLite is opened in WAL mode with foreign keys on and a short busy timeout (`BUSY_TIMEOUT_S`): every
write transaction starts with `BEGIN IMMEDIATE`, so concurrent writers queue on it; a lock held
longer is reported on the terminal, naming the file, and retried (`Retry`). PostgreSQL connections
get a connect timeout and statement and lock timeouts, so a frozen or vanished server is noticed.

`Retry` runs a whole transaction again, with back-off, while the database is locked or unreachable
(a restart, a network blip), for at most `VSS_DB_RETRY_S` seconds (default 120), saying so once on
stderr; then `StoreUnavailable` (exit 2), and the workflows leave their run `interrupted`, resumable.
Anything else that makes the database unusable (a bad URL, a missing driver, a corrupt file, a
refused login) is a one-line `StoreError` naming the file or host, never the password.
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

from vss_cli.errors import StoreError, StoreUnavailable

T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0  # SQLite: how long one attempt waits for another writer before it is reported
CONNECT_TIMEOUT_S = 10  # PostgreSQL: a server that does not answer the connection within this is unreachable
STATEMENT_TIMEOUT_MS = 300_000  # PostgreSQL: no vss statement runs this long; a hung one is cancelled
LOCK_TIMEOUT_MS = 30_000  # PostgreSQL: a row or advisory lock held longer is retried (`Retry`)
RETRY_ENV = "VSS_DB_RETRY_S"
DEFAULT_RETRY_S = 120.0
AFTER_GIVING_UP_S = 5.0  # once a window ran out, later transactions (marking runs interrupted) get this
LOCK_RETRIES = 5
WRITE_OPTION = "vss_write"  # execution option that makes the next BEGIN an IMMEDIATE one
PASSED_ON = (IntegrityError, ProgrammingError, DataError, NotSupportedError)  # the caller's to handle
LOCKED = ("locked", "busy", "deadlock", "lock timeout", "could not serialize")
UNREACHABLE = ("could not connect", "connection refused", "server closed the connection", "terminating connection",
               "connection timeout", "timeout expired", "is starting up", "shutting down", "no connection to the server",
               "connection is closed", "connection is lost", "consuming input failed", "ssl syscall",
               "could not receive data", "could not send data", "connection reset", "broken pipe",
               "statement timeout", "connection to server")


def _fail(message: str) -> StoreError:
    return StoreError(message)


def database_url(url_or_path: str | Path) -> URL:
    """The SQLAlchemy URL of a path or URL (a SQLite file's folder is created); StoreError for a URL
    that does not parse, with the password masked."""
    text = str(url_or_path)
    if "://" not in text:
        path = Path(text).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return make_url(f"sqlite:///{path}")
    try:
        url = make_url(text)
    except (ArgumentError, ValueError) as exc:
        raise _fail(f"bad database URL {mask(text)!r} ({exc}): use postgresql+psycopg://USER:PASSWORD@HOST:5432/DB "
                    "or a SQLite file path") from None
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    return url


def mask(text: str) -> str:
    """`text` with the password of a URL in it replaced by ***, also when the URL does not parse."""
    scheme, sep, rest = text.partition("://")
    if not sep or "@" not in rest:
        return text
    login, at, host = rest.rpartition("@")
    user, colon, _ = login.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}{at}{host}"


def where(url: URL) -> str:
    """What messages name: the SQLite file, or `host:port/database` (never the password)."""
    if url.get_backend_name() == "sqlite":
        return str(Path(url.database).resolve()) if url.database and url.database != ":memory:" else ":memory:"
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def _sqlite_connect(dbapi_connection, _record) -> None:
    """Hand transaction control to SQLAlchemy and set the pragmas every connection needs."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    _ensure_wal(cursor)
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_connect_read_only(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None


def _ensure_wal(cursor) -> None:
    """Switch the file to WAL once (the mode persists in the file). Switching needs an exclusive lock
    that SQLite may refuse at once while another process opens the same new database, so retry."""
    deadline = time.monotonic() + 30.0
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


def _postgres_connect(dbapi_connection, _record) -> None:
    """Statement and lock timeouts on every connection (SET, so the URL's own `options` stay)."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    cursor.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    cursor.close()
    dbapi_connection.commit()


def sqlite_read_only(url: URL) -> bool:
    """True when this user cannot write the SQLite file of `url` (or create files next to it)."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return False
    path = Path(url.database).resolve()
    return path.is_file() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))


def make_engine(url_or_path: str | Path | URL, *, read_only: bool = False) -> Engine:
    """Create the engine; SQLite gets the pragmas and BEGIN handling described above (`read_only`: the
    file is opened with `mode=ro`, `immutable=1`, for a folder this user cannot write), PostgreSQL its
    timeouts. StoreError when the driver is missing."""
    url = url_or_path if isinstance(url_or_path, URL) else database_url(url_or_path)
    try:
        if url.get_backend_name() != "sqlite":
            args = {} if "connect_timeout" in url.query else {"connect_timeout": CONNECT_TIMEOUT_S}
            engine = create_engine(url, pool_pre_ping=True, connect_args=args)
            if engine.dialect.name == "postgresql":
                event.listen(engine, "connect", _postgres_connect)
            return engine
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise _fail(f"database URL {url.render_as_string(hide_password=True)!r} needs a driver vss cannot load "
                    f"({exc}): use postgresql+psycopg://... with `pip install -e \".[postgres]\"`") from None
    if read_only:
        path = Path(url.database).resolve()
        engine = create_engine(f"sqlite:///file:{path}?mode=ro&immutable=1&uri=true")
        event.listen(engine, "connect", _sqlite_connect_read_only)
        return engine
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _reason(exc: BaseException) -> str:
    """The first line of the driver's message."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_lock_error(exc: BaseException) -> bool:
    """True for the transient errors another writer causes (SQLite busy/locked, PostgreSQL deadlock or
    lock timeout)."""
    message = _reason(exc).lower()
    return isinstance(exc, OperationalError) and any(word in message for word in LOCKED)


def is_disconnect(exc: BaseException) -> bool:
    """True when the server went away or cannot be reached now (a restart, a network blip)."""
    if not isinstance(exc, DBAPIError):
        return False
    message = _reason(exc).lower()
    return bool(getattr(exc, "connection_invalidated", False)) or any(word in message for word in UNREACHABLE)


def unusable(exc: DBAPIError, place: str) -> StoreError:
    """A one-line StoreError for a database error that retrying cannot cure, naming `place`."""
    reason, low = _reason(exc), _reason(exc).lower()
    if "not a database" in low or "malformed" in low or "file is encrypted" in low:
        return _fail(f"{place} is not a vss database or is damaged ({reason}): restore it from a backup or pass "
                     "another --db")
    if "readonly" in low or "read-only" in low or "unable to open database file" in low:
        return _fail(f"cannot write {place} ({reason}): check the permissions of the file and its folder, or pass "
                     "another --db")
    if "disk is full" in low or "no space left" in low:
        return _fail(f"disk full: {place} ({reason}): free space on that disk and run the command again")
    if "password authentication failed" in low or "authentication" in low or "role" in low and "does not exist" in low:
        return _fail(f"database {place} refused the login ({reason}): check the user and password in the URL")
    if "database" in low and "does not exist" in low:
        return _fail(f"database {place} does not exist ({reason}): create it (createdb) or fix the URL")
    return _fail(f"cannot use database {place} ({reason}): check the URL, and that the server runs and accepts "
                 "connections from this host")


def retry_budget() -> float:
    """Seconds a transaction is retried while the database is locked or unreachable (`VSS_DB_RETRY_S`)."""
    text = os.environ.get(RETRY_ENV, "")
    try:
        return max(0.0, float(text)) if text else DEFAULT_RETRY_S
    except ValueError:
        raise _fail(f"{RETRY_ENV}={text!r} is not a number of seconds: e.g. {RETRY_ENV}=120") from None


def notify(message: str) -> None:
    """One line on stderr (the store sits below the CLI's consoles)."""
    sys.stderr.write(f"vss: {message}\n")
    sys.stderr.flush()


@dataclass
class Retry:
    """Runs transactions for one store, retrying a locked or unreachable database with back-off for at
    most `budget_s` seconds; says so once per outage, and when the database is back."""

    place: str
    budget_s: float
    gave_up: bool = False
    _outage: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, fn: Callable[[], T]) -> T:
        budget = min(self.budget_s, AFTER_GIVING_UP_S) if self.gave_up else self.budget_s
        start, delay = time.monotonic(), 0.05
        while True:
            t0 = time.monotonic()
            try:
                result = fn()
            except DBAPIError as exc:
                if isinstance(exc, PASSED_ON):
                    raise
                what = "locked" if is_lock_error(exc) else "unreachable" if is_disconnect(exc) else None
                if what is None:
                    raise unusable(exc, self.place) from None
                elapsed = time.monotonic() - start
                if elapsed >= budget:
                    self.gave_up = True
                    raise StoreUnavailable(
                        f"database {self.place} stayed {what} for {elapsed:.0f} s ({_reason(exc)}): this process stops "
                        f"(a run it was recording is left interrupted); once the database is back, rerun with --resume (or "
                        f"`vss bench --join`), or wait longer with {RETRY_ENV}=SECONDS") from None
                if what == "unreachable" or time.monotonic() - t0 >= 1.0 or delay > 0.4:
                    self._notice(what, exc)
                time.sleep(min(delay * (1 + random.random()), max(0.0, budget - elapsed)))
                delay = min(delay * 2, 5.0)
                continue
            self._back()
            return result

    def _notice(self, what: str, exc: BaseException) -> None:
        with self._lock:
            if self._outage is not None:
                return
            self._outage = time.monotonic()
        holder = " by another process" if what == "locked" else ""
        notify(f"database {self.place} is {what}{holder} ({_reason(exc)}); retrying for up to {self.budget_s:.0f} s")

    def _back(self) -> None:
        self.gave_up = False
        with self._lock:
            began, self._outage = self._outage, None
        if began is not None:
            notify(f"database {self.place} is back after {time.monotonic() - began:.0f} s")


def retry_locked(fn: Callable[[], T], *, retries: int = LOCK_RETRIES) -> T:
    """Call `fn` (a whole transaction), retrying with jittered backoff when the database is locked
    (opening and migrating; a store's own transactions use `Retry`)."""
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
