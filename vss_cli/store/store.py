"""The lineage store: runs, edges, artifacts and metrics over SQLite or PostgreSQL (DESIGN §3).

Every method is one short transaction and returns detached rows (`vss_cli.store.rows`). Files are
hashed before a write transaction starts, so the write lock is held only for the inserts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, func, or_, select, update
from sqlalchemy import insert as insert_row
from sqlalchemy.exc import DBAPIError, IntegrityError

from vss_cli.errors import ConfigError, RunNotFound, RunTakenOver, StoreError
from vss_cli.store import keys
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
from vss_cli.store.writes import finite_values, insert_metrics, missing_run

T = TypeVar("T")
CLAIMABLE_STATUSES = ("pending", "interrupted")


def _now() -> datetime:
    return datetime.now(timezone.utc)


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


class Store(RunReads):
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
            now, started = _now(), status != "pending"
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

        now = _now()
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

    def heartbeat(self, run_id: str, *, worker: str | None = None) -> None:
        """Record that the run's worker is still alive (see `claim_run`). With `worker`, only while that
        worker still holds the unfinished run: RunTakenOver (nothing written) once another worker has
        claimed it (or it ended)."""
        held = RUN.c.id == run_id
        if worker is not None:  # a run nobody holds yet (a pending grid) may be heartbeaten too
            held = held & or_(RUN.c.worker == worker, RUN.c.worker.is_(None)) & RUN.c.status.in_(("running", "pending"))

        def txn(conn: Connection) -> None:
            if conn.execute(update(RUN).where(held).values(heartbeat_at=_now())).rowcount == 1:
                return
            row = require_run(conn, run_id)
            raise RunTakenOver(f"run {run_id} is now {row.status} for worker {row.worker} (attempt {row.attempt}), "
                               f"not {worker}: this process stops and leaves the run to its holder")

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
                conn.execute(insert_row(EDGE).values(**edge, created_at=_now()))

        self._write(txn)

    def add_artifact(self, run_id: str, *, kind: str, path: str | Path) -> Artifact:
        """Record a file the run wrote; its sha256 and size are read from disk now. Recording the same
        file of the same kind again (a resumed run that recorded it when interrupted) updates that row."""
        path = Path(path).expanduser().resolve()
        sha, size = file_digest(path)
        same = (ARTIFACT.c.run_id == run_id) & (ARTIFACT.c.kind == kind) & (ARTIFACT.c.path == str(path))

        def txn(conn: Connection) -> Artifact:
            require_run(conn, run_id)
            row = dict(run_id=run_id, kind=kind, path=str(path), sha256=sha, bytes=size, created_at=_now())
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
            insert_metrics(conn, run_id, values, step, _now())
            return len(values)

        return self._write(txn)

    def claim_run(
        self,
        run_id: str,
        *,
        worker: str | None = None,
        stale_after_s: float,
        also: Sequence[str] = (),
        if_attempt: int | None = None,
    ) -> bool:
        """Check-and-set: take a pending or interrupted run, or a running one whose heartbeat is stale.

        Sets it running for `worker` (default this process) with attempt + 1; True when this caller
        got it. One UPDATE with the condition in its WHERE clause, so two claimants never both win.
        `also` adds statuses taken whatever their heartbeat (a failed run to retry, a running run whose
        worker is known to be dead), but only while the run's attempt is still `if_attempt`, the one
        the caller looked at: once anyone has taken it, the attempt has moved on and the claim fails.
        """
        for status in also:
            _check(status, STATUSES, "run status")
        if also and if_attempt is None:
            raise ValueError("claim_run(also=...) needs if_attempt, the attempt the caller saw")
        now = _now()
        stale = or_(RUN.c.heartbeat_at.is_(None), RUN.c.heartbeat_at < now - timedelta(seconds=stale_after_s))
        takeable = or_(RUN.c.status.in_(CLAIMABLE_STATUSES), (RUN.c.status == "running") & stale)
        if also:
            takeable = or_(takeable, RUN.c.status.in_(also) & (RUN.c.attempt == if_attempt))
        stmt = (
            update(RUN)
            .where(RUN.c.id == run_id)
            .where(takeable)
            .values(
                status="running",
                worker=worker or worker_id(),
                heartbeat_at=now,
                started_at=now,
                finished_at=None,
                error=None,
                attempt=RUN.c.attempt + 1,
            )
        )
        return self._write(lambda conn: conn.execute(stmt).rowcount == 1)

    def finish_claimed(
        self,
        run_id: str,
        status: str,
        *,
        attempt: int,
        worker: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """Compare-and-set the end of a claimed run: set `status` (a terminal one) and append `metrics`
        in one transaction, only while the run is still `running` at `attempt` for `worker` (default this
        process). False, with nothing written, when another worker has taken the run over meanwhile, so
        a run is completed once, by the worker that holds it."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"finish_claimed needs a terminal status, not {status!r}")
        values, now = finite_values(metrics or {}), _now()
        held = (RUN.c.id == run_id) & (RUN.c.status == "running") & (RUN.c.attempt == attempt) & (
            RUN.c.worker == (worker or worker_id()))
        stmt = update(RUN).where(held).values(status=status, finished_at=now,
                                              **({"error": error} if error is not None else {}))

        def txn(conn: Connection) -> bool:
            if conn.execute(stmt).rowcount != 1:
                return False
            insert_metrics(conn, run_id, values, None, now)
            return True

        return self._write(txn)
