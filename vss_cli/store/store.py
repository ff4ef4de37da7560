"""The lineage store: runs, edges, artifacts and metrics over SQLite or PostgreSQL (DESIGN §3).

Every method is one short transaction and returns detached rows (`vss_cli.store.rows`). Files are
hashed before a write transaction starts, so the write lock is held only for the inserts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, func, or_, update
from sqlalchemy import insert as insert_row
from sqlalchemy import select as select_sql
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from vss_cli.errors import CheckpointError, ConfigError, RunNotFound
from vss_cli.store import keys, queries
from vss_cli.store.bulk import BulkStore
from vss_cli.store.engine import WRITE_OPTION, make_engine, retry_locked
from vss_cli.store.identity import (  # noqa: F401 - re-exported
    artifact_intact,
    file_digest,
    file_sha256,
    new_run_id,
    worker_id,
)
from vss_cli.store.migrations import migrate
from vss_cli.store.queries import EDGE, METRIC, RUN
from vss_cli.store.rows import Artifact, Lineage, Metric, Run
from vss_cli.store.tables import (
    KINDS,
    RELATIONS,
    STATUSES,
    TERMINAL_STATUSES,
    ArtifactRecord,
    EdgeRecord,
    MetricRecord,
    RunRecord,
)
from vss_cli.store.tables import check_choice as _check

T = TypeVar("T")
CLAIMABLE_STATUSES = ("pending", "interrupted")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number (numpy/torch scalars included), else None."""
    if isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _finite_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {key: v for key, value in metrics.items() if (v := _finite(value)) is not None}


def _insert_metrics(session: Session, run_id: str, values: Mapping[str, float], step: int | None, now: datetime) -> None:
    """One multi-row INSERT of metric rows."""
    if values:
        rows = [dict(run_id=run_id, key=k, value=v, step=step, created_at=now) for k, v in values.items()]
        session.connection().execute(insert_row(METRIC), rows)


def _missing_run(session: Session, run_ids: Sequence[str]) -> RunNotFound | None:
    """RunNotFound naming the first of `run_ids` that is not in the store, or None (one statement)."""
    if not run_ids:
        return None
    found = set(session.connection().execute(select_sql(RUN.c.id).where(RUN.c.id.in_(list(run_ids)))).scalars())
    missing = [run_id for run_id in run_ids if run_id not in found]
    return RunNotFound(f"no run has id '{missing[0]}': see `vss runs list`") if missing else None


def _require(session: Session, run_id: str) -> RunRecord:
    rec = session.get(RunRecord, run_id)
    if rec is None:
        raise RunNotFound(f"no run has id '{run_id}': see `vss runs list`")
    return rec


def _ambiguous(prefix: str, ids: Sequence[str]) -> RunNotFound:
    shown = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
    return RunNotFound(f"'{prefix}' matches several runs ({shown}): give more characters of the id")


class Store(BulkStore):
    """The lineage database. Opening it migrates it; options are keyword-only past the run id."""

    def __init__(self, url_or_path: str | Path) -> None:
        self.engine: Engine = make_engine(url_or_path)
        self.url = str(self.engine.url)
        self.applied = migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------------

    def _transaction(self, fn: Callable[[Session], T], *, write: bool) -> T:
        def attempt() -> T:
            with Session(self.engine, expire_on_commit=False) as session:
                if write:
                    session.connection(execution_options={WRITE_OPTION: True})
                result = fn(session)
                session.commit()
                return result

        return retry_locked(attempt)

    def _read(self, fn: Callable[[Session], T]) -> T:
        return self._transaction(fn, write=False)

    def _read_core(self, fn: Callable[[Connection], T]) -> T:
        """A read on a plain connection (no ORM session): the cheap path for batch queries."""

        def attempt() -> T:
            with self.engine.connect() as conn, conn.begin():
                return fn(conn)

        return retry_locked(attempt)

    def _write(self, fn: Callable[[Session], T]) -> T:
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
        values = _finite_values(metrics or {})

        def txn(session: Session) -> Run:
            run = insert(session)
            _insert_metrics(session, run.id, values, step, run.created_at)
            return run

        return self._write_with_parents(txn, parents)

    def _write_with_parents(self, fn: Callable[[Session], T], parents: Sequence[tuple[str, str]]) -> T:
        """A write whose parent edges the foreign keys check (no lookup first, one round trip less):
        a missing parent becomes RunNotFound naming it, and nothing is written."""
        try:
            return self._write(fn)
        except IntegrityError:
            missing = self._read(lambda session: _missing_run(session, [p for p, _ in parents]))
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
    ) -> tuple[Run, bool]:
        """The run of this kind and key under the first parent (by its relation), created if missing.

        Without parents the key is looked up among all runs of the kind. Returns (run, created). The
        lookup and the insert share one write transaction (`BEGIN IMMEDIATE` on SQLite, an advisory
        lock on PostgreSQL), so processes racing to create the same run end up with one row.
        """
        insert = self._run_inserter(kind, config, parents, status, config_key, name, versions, out_dir)

        def txn(session: Session) -> tuple[Run, bool]:
            if session.get_bind().dialect.name == "postgresql":
                lock = int(config_key[:15], 16)
                session.exec(select(func.pg_advisory_xact_lock(lock)))
            query = select(RunRecord).where(RunRecord.kind == kind, RunRecord.config_key == config_key)
            if parents:
                parent_id, relation = parents[0]
                query = query.join(EdgeRecord, col(EdgeRecord.child_id) == RunRecord.id).where(
                    EdgeRecord.parent_id == parent_id, EdgeRecord.relation == relation
                )
            existing = session.exec(query.order_by(col(RunRecord.id)).limit(1)).first()
            if existing is not None:
                return Run.from_record(existing), False
            return insert(session), True

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
    ) -> Callable[[Session], Run]:
        """Validate a new run's fields now; the returned function inserts it (and its edges) in a session."""
        _check(kind, KINDS, "run kind")
        _check(status, STATUSES, "run status")
        for _, relation in parents:
            _check(relation, RELATIONS, "relation")
        config_json = keys.canonical_json(config)
        key = config_key or keys.config_key(config)
        versions_json = keys.canonical_json(dict(versions)) if versions is not None else None

        def insert(session: Session) -> Run:
            now, started = _now(), status != "pending"
            rec = RunRecord(
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
                versions=versions_json,
                out_dir=str(out_dir) if out_dir is not None else None,
            )
            conn = session.connection()
            conn.execute(insert_row(RUN), [rec.model_dump()])
            if parents:
                edges = [dict(parent_id=p, child_id=rec.id, relation=r, created_at=now) for p, r in parents]
                conn.execute(insert_row(EDGE), edges)
            return Run.from_record(rec)

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

        def txn(session: Session) -> Run:
            rec = _require(session, run_id)
            for key, value in values.items():
                setattr(rec, key, value)
            session.add(rec)
            return Run.from_record(rec)

        return self._write(txn)

    def set_status(self, run_id: str, status: str, *, error: str | None = None) -> None:
        """Move a run to `status`; completed/failed/interrupted also set finished_at."""
        _check(status, STATUSES, "run status")

        def txn(session: Session) -> None:
            rec, now = _require(session, run_id), _now()
            rec.status = status
            if status in TERMINAL_STATUSES:
                rec.finished_at = now
            elif status == "running":
                rec.started_at, rec.heartbeat_at, rec.finished_at = rec.started_at or now, now, None
            if error is not None:
                rec.error = error
            session.add(rec)

        self._write(txn)

    def heartbeat(self, run_id: str) -> None:
        """Record that the run's worker is still alive (see `claim_run`)."""

        def txn(session: Session) -> None:
            stmt = update(RunRecord).where(col(RunRecord.id) == run_id).values(heartbeat_at=_now())
            if session.exec(stmt).rowcount == 0:
                raise RunNotFound(f"no run has id '{run_id}': see `vss runs list`")

        self._write(txn)

    def add_edge(self, parent_id: str, child_id: str, relation: str) -> None:
        """Link parent -> child; adding an existing edge again changes nothing."""
        _check(relation, RELATIONS, "relation")
        if parent_id == child_id:
            raise ConfigError(f"run {parent_id} cannot be its own parent: pass two different runs")

        def txn(session: Session) -> None:
            _require(session, parent_id)
            _require(session, child_id)
            query = select(EdgeRecord).where(
                EdgeRecord.parent_id == parent_id,
                EdgeRecord.child_id == child_id,
                EdgeRecord.relation == relation,
            )
            if session.exec(query).first() is None:
                session.add(
                    EdgeRecord(parent_id=parent_id, child_id=child_id, relation=relation, created_at=_now())
                )

        self._write(txn)

    def add_artifact(self, run_id: str, *, kind: str, path: str | Path) -> Artifact:
        """Record a file the run wrote; its sha256 and size are read from disk now."""
        path = Path(path).expanduser().resolve()
        sha, size = file_digest(path)

        def txn(session: Session) -> Artifact:
            _require(session, run_id)
            rec = ArtifactRecord(
                run_id=run_id, kind=kind, path=str(path), sha256=sha, bytes=size, created_at=_now()
            )
            session.add(rec)
            session.flush()
            return Artifact.from_record(rec)

        return self._write(txn)

    def add_metrics(self, run_id: str, metrics: Mapping[str, Any], *, step: int | None = None) -> int:
        """Append metrics in one transaction; values that are not finite numbers are skipped.

        Returns how many were written.
        """
        values = _finite_values(metrics)

        def txn(session: Session) -> int:
            _require(session, run_id)
            _insert_metrics(session, run_id, values, step, _now())
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
        stale = or_(
            col(RunRecord.heartbeat_at).is_(None),
            col(RunRecord.heartbeat_at) < now - timedelta(seconds=stale_after_s),
        )
        takeable = or_(
            col(RunRecord.status).in_(CLAIMABLE_STATUSES),
            (col(RunRecord.status) == "running") & stale,
        )
        if also:
            takeable = or_(takeable, col(RunRecord.status).in_(also) & (col(RunRecord.attempt) == if_attempt))
        stmt = (
            update(RunRecord)
            .where(col(RunRecord.id) == run_id)
            .where(takeable)
            .values(
                status="running",
                worker=worker or worker_id(),
                heartbeat_at=now,
                started_at=now,
                finished_at=None,
                error=None,
                attempt=RunRecord.attempt + 1,
            )
        )
        return self._write(lambda session: session.exec(stmt).rowcount == 1)

    # -- reads ----------------------------------------------------------------------------------

    def get_run(self, id_or_prefix: str) -> Run:
        """The run with this id, or the only run whose id starts with it."""
        prefix = id_or_prefix.strip().lower()

        def txn(session: Session) -> Run:
            exact = session.get(RunRecord, prefix) if prefix else None
            if exact is not None:
                return Run.from_record(exact)
            query = select(RunRecord).where(col(RunRecord.id).startswith(prefix, autoescape=True))
            recs = session.exec(query.order_by(col(RunRecord.id)).limit(6)).all() if prefix else []
            if not recs:
                raise RunNotFound(f"no run matches '{id_or_prefix}': see `vss runs list`")
            if len(recs) > 1:
                raise _ambiguous(id_or_prefix, [r.id for r in recs])
            return Run.from_record(recs[0])

        return self._read(txn)

    def list_runs(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        config_key: str | None = None,
    ) -> list[Run]:
        """Runs, newest first, optionally filtered."""
        query = select(RunRecord)
        if kind is not None:
            _check(kind, KINDS, "run kind")
            query = query.where(RunRecord.kind == kind)
        if status is not None:
            _check(status, STATUSES, "run status")
            query = query.where(RunRecord.status == status)
        if config_key is not None:
            query = query.where(RunRecord.config_key == config_key)
        query = query.order_by(col(RunRecord.created_at).desc(), col(RunRecord.id).desc()).limit(limit)
        return self._read(lambda session: [Run.from_record(r) for r in session.exec(query).all()])

    def find_completed(self, *, config_key: str, kind: str | None = None) -> Run | None:
        """A completed run with this key whose artifacts all still exist with their sha256, else None."""
        for run in self.list_runs(config_key=config_key, kind=kind, status="completed"):
            if all(artifact_intact(a) for a in self.artifacts(run.id)):
                return run
        return None

    def parents(self, run_id: str) -> list[tuple[str, Run]]:
        """(relation, parent run) pairs, in the order the edges were added."""
        return self.parents_many([run_id])[run_id]

    def children(self, run_id: str) -> list[tuple[str, Run]]:
        """(relation, child run) pairs, in the order the edges were added."""
        return self.children_many([run_id])[run_id]

    def lineage(self, run_id: str, *, max_depth: int = 16) -> Lineage:
        """The run with its ancestor and descendant trees, up to `max_depth` edges each way (one
        statement per level)."""

        def txn(session: Session) -> Lineage:
            rec = _require(session, run_id)
            seen = frozenset({rec.id})
            up = queries.reachable(session, rec.id, upward=True, max_depth=max_depth)
            down = queries.reachable(session, rec.id, upward=False, max_depth=max_depth)
            return Lineage(
                run=Run.from_record(rec),
                ancestors=queries.tree(up, rec.id, max_depth, seen),
                descendants=queries.tree(down, rec.id, max_depth, seen),
            )

        return self._read(txn)

    def artifacts(self, run_id: str, kind: str | None = None) -> list[Artifact]:
        """The run's artifacts in the order they were recorded."""
        query = select(ArtifactRecord).where(ArtifactRecord.run_id == run_id)
        if kind is not None:
            query = query.where(ArtifactRecord.kind == kind)
        query = query.order_by(col(ArtifactRecord.id))
        return self._read(lambda session: [Artifact.from_record(r) for r in session.exec(query).all()])

    def artifact_path(self, run_id: str, kind: str = "checkpoint") -> Path:
        """Path of the run's latest artifact of `kind` (id or unique prefix); CheckpointError if none."""
        run = self.get_run(run_id)
        found = self.artifacts(run.id, kind)
        if not found:
            raise CheckpointError(
                f"run {run.id} ({run.kind}, {run.status}) has no {kind} artifact: "
                "pass a completed train, finetune or prune run (see `vss runs list`)"
            )
        path = found[-1].path
        if not path.is_file():
            raise CheckpointError(
                f"the {kind} of run {run.id} is gone from {path}: rerun that run or pass another"
            )
        return path

    def run_for_artifact(self, path: str | Path, kind: str | None = None) -> Run | None:
        """The run that recorded this file as an artifact (newest first), or None: lineage for paths."""
        resolved = str(Path(path).resolve())
        query = select(ArtifactRecord).where(ArtifactRecord.path == resolved)
        if kind is not None:
            query = query.where(ArtifactRecord.kind == kind)
        query = query.order_by(col(ArtifactRecord.id).desc())

        def txn(session: Session) -> Run | None:
            art = session.exec(query).first()
            if art is None:
                return None
            rec = session.get(RunRecord, art.run_id)
            return Run.from_record(rec) if rec is not None else None

        return self._read(txn)

    def metrics(self, run_id: str, key: str | None = None) -> list[Metric]:
        """The run's metric rows in the order they were appended."""
        query = select(MetricRecord).where(MetricRecord.run_id == run_id)
        if key is not None:
            query = query.where(MetricRecord.key == key)
        query = query.order_by(col(MetricRecord.id))
        return self._read(lambda session: [Metric.from_record(r) for r in session.exec(query).all()])

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        """The last appended value of each metric key (keys in the order of their last append)."""
        return self.latest_metrics_many([run_id])[run_id]
