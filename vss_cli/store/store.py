"""The lineage store: runs, edges, artifacts and metrics over SQLite or PostgreSQL (DESIGN §3).

Every method is one short transaction and returns detached rows (`vss_cli.store.rows`). Files are
hashed before a write transaction starts, so the write lock is held only for the inserts. `Store`
inherits its reads (`reads`, `bulk`) and the writes a worker holds a run with (`claims`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy import insert as insert_row
from sqlalchemy.exc import DBAPIError, IntegrityError

from vss_cli.errors import ConfigError, RunNotFound, StoreError
from vss_cli.store import keys
from vss_cli.store.claims import RunClaims
from vss_cli.store.engine import (
    WRITE_OPTION,
    Retry,
    database_url,
    make_engine,
    retry_budget,
    sqlite_read_only,
    unusable,
    where,
)
from vss_cli.store.identity import (  # noqa: F401 - re-exported
    artifact_intact,
    file_digest,
    file_sha256,
    new_run_id,
    worker_id,
)
from vss_cli.store.migrations import MIGRATIONS, applied_migrations, migrate
from vss_cli.store.reads import RunReads, require_run
from vss_cli.store.rows import Artifact, Run
from vss_cli.store.tables import ARTIFACT, EDGE, KINDS, RELATIONS, RUN, STATUSES, TERMINAL_STATUSES
from vss_cli.store.tables import check_choice as _check
from vss_cli.store.writes import finite_values, insert_metrics, missing_run, utc_now

T = TypeVar("T")


def _refuse_taken_folder(conn: Connection, kind: str, config_key: str, out_dir: str) -> None:
    """ConfigError when a run of `kind` with another key records `out_dir` (checked in the caller's write
    transaction; on PostgreSQL under an advisory lock on the folder)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(int(keys.config_key({"out_dir": out_dir})[:15], 16))))
    other = conn.execute(select(RUN.c.id).where(RUN.c.kind == kind, RUN.c.out_dir == out_dir,
                                                RUN.c.config_key != config_key).limit(1)).scalar()
    if other is not None:
        raise ConfigError(f"--out-dir {out_dir} belongs to another grid ({kind} run {other}): pass another --out-dir, "
                          "or --force-new to start a new grid there")


class Store(RunClaims, RunReads):
    """The lineage database. Opening it migrates it; options are keyword-only past the run id."""

    def __init__(self, url_or_path: str | Path) -> None:
        url = database_url(url_or_path)
        self.place = where(url)  # what messages name: the file, or host:port/database
        self.read_only: str | None = None  # why writes are refused, when they are
        if sqlite_read_only(url):
            self.read_only = f"{self.place} is read-only for this user"
        self.engine: Engine = make_engine(url, read_only=self.read_only is not None)
        self.url = str(self.engine.url)  # password masked
        self.retry = Retry(self.place, retry_budget())
        try:
            self.applied = self._open()
        except DBAPIError as exc:  # corrupt, unreachable, refused: one line naming the file or host
            self.engine.dispose()
            raise unusable(exc, self.place) from None

    def _open(self) -> list[str]:
        """Migrate the database, unless it is read-only here or has a schema newer than this vss (then
        reads work and writes are refused, naming both schema versions)."""
        with self.engine.connect() as conn:
            applied = applied_migrations(conn)
        newer = [name for name in applied if name not in {fn.__name__ for fn in MIGRATIONS}]
        if newer:
            self.read_only = (f"{self.place} has schema version {len(applied)} ({applied[-1]}), newer than this vss's "
                              f"{len(MIGRATIONS)} ({MIGRATIONS[-1].__name__}): upgrade vss to write to it")
        if self.read_only is not None:
            return []
        return migrate(self.engine)

    def check_writable(self) -> None:
        """StoreError (one line, naming the file or both schema versions) when writes are refused."""
        if self.read_only is not None:
            raise StoreError(f"cannot write: {self.read_only}")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------------

    def _transaction(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        """Run `fn` in one transaction on a fresh connection (committed on success), retrying the whole
        transaction while the database is locked or unreachable (`engine.Retry`); writes start with
        `BEGIN IMMEDIATE` on SQLite, and are refused (StoreError) on a read-only or newer database."""

        if write:
            self.check_writable()

        def attempt() -> T:
            with self.engine.connect() as conn:
                if write:
                    conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    return fn(conn)

        return self.retry(attempt)

    def _read(self, fn: Callable[[Connection], T]) -> T:
        return self._transaction(fn, write=False)

    def _write(self, fn: Callable[[Connection], T]) -> T:
        return self._transaction(fn, write=True)

    # -- writes ---------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        kind: str,
        config: dict,
        parents: Sequence[tuple[str, str]] = (),
        status: str = "running",
        config_key: str | None = None,
        name: str | None = None,
        versions: Mapping[str, Any] | None = None,
        out_dir: str | Path | None = None,
        metrics: Mapping[str, Any] | None = None,
        step: int | None = None,
    ) -> Run:
        """Record a new run, its parent edges and (optionally) its first `metrics` at `step`, in one
        transaction. A `running` run starts now with this worker."""
        insert = self._run_inserter(kind, config, parents, status, config_key, name, versions, out_dir)
        values = finite_values(metrics or {})

        def txn(conn: Connection) -> Run:
            run = insert(conn)
            insert_metrics(conn, run.id, values, step, run.created_at)
            return run

        return self._write_with_parents(txn, parents)

    def _write_with_parents(self, fn: Callable[[Connection], T], parents: Sequence[tuple[str, str]]) -> T:
        """A write whose parent edges the foreign keys check (no lookup first, one round trip less):
        a missing parent becomes RunNotFound naming it, and nothing is written."""
        try:
            return self._write(fn)
        except IntegrityError:
            missing = self._read(lambda conn: missing_run(conn, [p for p, _ in parents]))
            if missing is None:
                raise
            raise missing from None

    def create_run_once(
        self,
        *,
        kind: str,
        config: dict,
        config_key: str,
        parents: Sequence[tuple[str, str]] = (),
        status: str = "pending",
        name: str | None = None,
        versions: Mapping[str, Any] | None = None,
        out_dir: str | Path | None = None,
        own_out_dir: bool = False,
    ) -> tuple[Run, bool]:
        """The run of this kind and key under the first parent (by its relation), created if missing.

        Without parents the key is looked up among all runs of the kind. Returns (run, created). The
        lookup and the insert share one write transaction (`BEGIN IMMEDIATE` on SQLite, an advisory
        lock on PostgreSQL), so processes racing to create the same run end up with one row. With
        `own_out_dir`, a new run is refused (ConfigError, nothing written) when a run of this kind with
        another key already records `out_dir`: two grids started at once in one folder, one wins.
        """
        insert = self._run_inserter(kind, config, parents, status, config_key, name, versions, out_dir)

        def txn(conn: Connection) -> tuple[Run, bool]:
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(int(config_key[:15], 16))))
            query = select(RUN).where(RUN.c.kind == kind, RUN.c.config_key == config_key)
            if parents:
                parent_id, relation = parents[0]
                query = query.join(EDGE, EDGE.c.child_id == RUN.c.id).where(
                    EDGE.c.parent_id == parent_id, EDGE.c.relation == relation
                )
            existing = conn.execute(query.order_by(RUN.c.id).limit(1)).first()
            if existing is not None:
                return Run.from_row(existing), False
            if own_out_dir and out_dir is not None:
                _refuse_taken_folder(conn, kind, config_key, str(out_dir))
            return insert(conn), True

        return self._write_with_parents(txn, parents)

    def _run_inserter(
        self,
        kind: str,
        config: dict,
        parents: Sequence[tuple[str, str]],
        status: str,
        config_key: str | None,
        name: str | None,
        versions: Mapping[str, Any] | None,
        out_dir: str | Path | None,
    ) -> Callable[[Connection], Run]:
        """Validate a new run's fields now; the returned function inserts it (and its edges)."""
        _check(kind, KINDS, "run kind")
        _check(status, STATUSES, "run status")
        for _, relation in parents:
            _check(relation, RELATIONS, "relation")
        config_json = keys.canonical_json(config)
        key = config_key or keys.config_key(config)
        versions_json = keys.canonical_json(dict(versions)) if versions is not None else None

        def insert(conn: Connection) -> Run:
            now, started = utc_now(), status != "pending"
            row = dict(
                id=new_run_id(),
                kind=kind,
                status=status,
                name=name,
                config=config_json,
                config_key=key,
                created_at=now,
                started_at=now if started else None,
                heartbeat_at=now if started else None,
                finished_at=now if status in TERMINAL_STATUSES else None,
                worker=worker_id() if started else None,
                attempt=1 if started else 0,
                error=None,
                versions=versions_json,
                out_dir=str(out_dir) if out_dir is not None else None,
            )
            conn.execute(insert_row(RUN), [row])
            if parents:
                edges = [dict(parent_id=p, child_id=row["id"], relation=r, created_at=now) for p, r in parents]
                conn.execute(insert_row(EDGE), edges)
            return Run.from_record(row)

        return insert

    def update_run(
        self,
        run_id: str,
        *,
        name: str | None = None,
        out_dir: str | Path | None = None,
        versions: Mapping[str, Any] | None = None,
    ) -> Run:
        """Set the mutable descriptive fields that are given (config and key never change)."""
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = name
        if out_dir is not None:
            values["out_dir"] = str(out_dir)
        if versions is not None:
            values["versions"] = keys.canonical_json(dict(versions))

        def txn(conn: Connection) -> Run:
            require_run(conn, run_id)
            if values:
                conn.execute(update(RUN).where(RUN.c.id == run_id).values(**values))
            return Run.from_row(require_run(conn, run_id))

        return self._write(txn)

    def set_status(self, run_id: str, status: str, *, error: str | None = None) -> None:
        """Move a run to `status`; completed/failed/interrupted also set finished_at."""
        _check(status, STATUSES, "run status")

        now = utc_now()
        values: dict[str, Any] = {"status": status}
        if status in TERMINAL_STATUSES:
            values["finished_at"] = now
        elif status == "running":
            values.update(started_at=func.coalesce(RUN.c.started_at, now), heartbeat_at=now, finished_at=None)
        if error is not None:
            values["error"] = error
        stmt = update(RUN).where(RUN.c.id == run_id).values(**values)

        def txn(conn: Connection) -> None:
            if conn.execute(stmt).rowcount == 0:
                raise RunNotFound(f"no run has id '{run_id}': see `vss runs list`")

        self._write(txn)

    def add_edge(self, parent_id: str, child_id: str, relation: str) -> None:
        """Link parent -> child; adding an existing edge again changes nothing."""
        _check(relation, RELATIONS, "relation")
        if parent_id == child_id:
            raise ConfigError(f"run {parent_id} cannot be its own parent: pass two different runs")

        edge = dict(parent_id=parent_id, child_id=child_id, relation=relation)
        query = select(EDGE.c.id).where(*(EDGE.c[name] == value for name, value in edge.items()))

        def txn(conn: Connection) -> None:
            require_run(conn, parent_id)
            require_run(conn, child_id)
            if conn.execute(query).first() is None:
                conn.execute(insert_row(EDGE).values(**edge, created_at=utc_now()))

        self._write(txn)

    def add_artifact(self, run_id: str, *, kind: str, path: str | Path) -> Artifact:
        """Record a file the run wrote; its sha256 and size are read from disk now. Recording the same
        file of the same kind again (a resumed run that recorded it when interrupted) updates that row."""
        path = Path(path).expanduser().resolve()
        sha, size = file_digest(path)
        same = (ARTIFACT.c.run_id == run_id) & (ARTIFACT.c.kind == kind) & (ARTIFACT.c.path == str(path))

        def txn(conn: Connection) -> Artifact:
            require_run(conn, run_id)
            row = dict(run_id=run_id, kind=kind, path=str(path), sha256=sha, bytes=size, created_at=utc_now())
            existing = conn.execute(select(ARTIFACT.c.id).where(same).order_by(ARTIFACT.c.id).limit(1)).scalar()
            if existing is not None:
                conn.execute(update(ARTIFACT).where(ARTIFACT.c.id == existing).values(**row))
                return Artifact.from_record({"id": existing, **row})
            (row_id,) = conn.execute(insert_row(ARTIFACT).values(**row)).inserted_primary_key
            return Artifact.from_record({"id": row_id, **row})

        return self._write(txn)

    def add_metrics(self, run_id: str, metrics: Mapping[str, Any], *, step: int | None = None) -> int:
        """Append metrics in one transaction; values that are not finite numbers are skipped.

        Returns how many were written.
        """
        values = finite_values(metrics)

        def txn(conn: Connection) -> int:
            require_run(conn, run_id)
            insert_metrics(conn, run_id, values, step, utc_now())
            return len(values)

        return self._write(txn)
