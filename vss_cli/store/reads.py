"""The lineage store's single-run reads: runs by id or prefix, listings, lineage, artifacts, metrics.

`Store` inherits them; every one is one short read transaction (`_read`) returning detached rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlmodel import Session, col, select

from vss_cli.errors import CheckpointError, RunNotFound
from vss_cli.store import queries
from vss_cli.store.bulk import BulkStore
from vss_cli.store.identity import artifact_intact
from vss_cli.store.rows import Artifact, Lineage, Metric, Run
from vss_cli.store.tables import KINDS, STATUSES, ArtifactRecord, MetricRecord, RunRecord
from vss_cli.store.tables import check_choice as _check


def require_run(session: Session, run_id: str) -> RunRecord:
    rec = session.get(RunRecord, run_id)
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
            rec = require_run(session, run_id)
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
