"""The lineage store's single-run reads: runs by id or prefix, listings, lineage, artifacts, metrics.

`Store` inherits them; every one is one short read transaction (`_read`) returning detached rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Row, select

from vss_cli.errors import CheckpointError, RunNotFound
from vss_cli.store import queries
from vss_cli.store.bulk import BulkStore
from vss_cli.store.identity import artifact_intact
from vss_cli.store.rows import Artifact, Lineage, Metric, Run
from vss_cli.store.tables import ARTIFACT, KINDS, METRIC, RUN, STATUSES
from vss_cli.store.tables import check_choice as _check


def run_row(conn: Connection, run_id: str) -> Row[Any] | None:
    """The run table's row with this exact id, or None."""
    return conn.execute(select(RUN).where(RUN.c.id == run_id)).first()


def require_run(conn: Connection, run_id: str) -> Row[Any]:
    rec = run_row(conn, run_id)
    if rec is None:
        raise RunNotFound(f"no run has id '{run_id}': see `vss runs list`")
    return rec


def _ambiguous(prefix: str, ids: Sequence[str]) -> RunNotFound:
    shown = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
    return RunNotFound(f"'{prefix}' matches several runs ({shown}): give more characters of the id")


class RunReads(BulkStore):
    """Read methods of `Store` (see there)."""

    def get_run(self, id_or_prefix: str) -> Run:
        """The run with this id, or the only run whose id starts with it."""
        prefix = id_or_prefix.strip().lower()

        def txn(conn: Connection) -> Run:
            exact = run_row(conn, prefix) if prefix else None
            if exact is not None:
                return Run.from_row(exact)
            query = select(RUN).where(RUN.c.id.startswith(prefix, autoescape=True))
            recs = conn.execute(query.order_by(RUN.c.id).limit(6)).all() if prefix else []
            if not recs:
                raise RunNotFound(f"no run matches '{id_or_prefix}': see `vss runs list`")
            if len(recs) > 1:
                raise _ambiguous(id_or_prefix, [r.id for r in recs])
            return Run.from_row(recs[0])

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
        query = select(RUN)
        if kind is not None:
            _check(kind, KINDS, "run kind")
            query = query.where(RUN.c.kind == kind)
        if status is not None:
            _check(status, STATUSES, "run status")
            query = query.where(RUN.c.status == status)
        if config_key is not None:
            query = query.where(RUN.c.config_key == config_key)
        query = query.order_by(RUN.c.created_at.desc(), RUN.c.id.desc()).limit(limit)
        return self._read(lambda conn: [Run.from_row(r) for r in conn.execute(query).all()])

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

        def txn(conn: Connection) -> Lineage:
            rec = require_run(conn, run_id)
            seen = frozenset({rec.id})
            up = queries.reachable(conn, rec.id, upward=True, max_depth=max_depth)
            down = queries.reachable(conn, rec.id, upward=False, max_depth=max_depth)
            return Lineage(
                run=Run.from_row(rec),
                ancestors=queries.tree(up, rec.id, max_depth, seen),
                descendants=queries.tree(down, rec.id, max_depth, seen),
            )

        return self._read(txn)

    def artifacts(self, run_id: str, kind: str | None = None) -> list[Artifact]:
        """The run's artifacts (only those of `kind`, when given) in the order they were recorded."""
        return [a for a in self.artifacts_many([run_id])[run_id] if kind is None or a.kind == kind]

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
        query = select(ARTIFACT.c.run_id).where(ARTIFACT.c.path == resolved)
        if kind is not None:
            query = query.where(ARTIFACT.c.kind == kind)
        query = query.order_by(ARTIFACT.c.id.desc()).limit(1)

        def txn(conn: Connection) -> Run | None:
            run_id = conn.execute(query).scalar()
            if run_id is None:
                return None
            rec = run_row(conn, run_id)
            return Run.from_row(rec) if rec is not None else None

        return self._read(txn)

    def metrics(self, run_id: str, key: str | None = None) -> list[Metric]:
        """The run's metric rows in the order they were appended."""
        query = select(METRIC).where(METRIC.c.run_id == run_id)
        if key is not None:
            query = query.where(METRIC.c.key == key)
        query = query.order_by(METRIC.c.id)
        return self._read(lambda conn: [Metric.from_record(r) for r in conn.execute(query).all()])

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        """The last appended value of each metric key (keys in the order of their last append)."""
        return self.latest_metrics_many([run_id])[run_id]
