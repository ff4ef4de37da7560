"""Deleting runs (`vss runs rm`) and collecting garbage (`vss runs gc`) without dangling rows.

A deletion removes the runs' metric, artifact and edge rows (edges in both directions) with the run
rows in one write transaction, then unlinks the artifact files that no surviving run records.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, delete, or_, select, true

from vss_cli.errors import ConfigError
from vss_cli.store import queries
from vss_cli.store.rows import Artifact, Run
from vss_cli.store.tables import ARTIFACT, EDGE, METRIC, RUN

GC_STATUSES = ("failed", "interrupted")
PROTECTED_STATUSES = ("completed", "running", "pending")


@dataclass(frozen=True)
class Removal:
    """What a deletion removes (a plan) or removed (a result)."""

    runs: tuple[Run, ...]
    artifacts: tuple[Artifact, ...]  # rows of the removed runs
    shared: tuple[Path, ...] = ()  # files kept because a surviving run's artifact records them too
    missing_rows: int = 0  # gc: artifact rows of surviving runs whose files were already gone
    files_removed: int = 0
    bytes_freed: int = 0
    kept: tuple[Run, ...] = ()  # gc: candidates kept because their subtree holds live runs

    @property
    def run_ids(self) -> list[str]:
        return [run.id for run in self.runs]

    @property
    def planned_bytes(self) -> int:
        shared = {str(p) for p in self.shared}
        files = {str(a.path): a.bytes for a in self.artifacts if str(a.path) not in shared}
        return sum(files.values())


def _runs(conn: Connection, ids: Sequence[str]) -> dict[str, Run]:
    found: dict[str, Run] = {}
    for batch in queries.chunks(ids):
        for rec in conn.execute(select(RUN).where(RUN.c.id.in_(batch))):
            found[rec.id] = Run.from_row(rec)
    return found


def shared_paths(conn: Connection, paths: Sequence[str], doomed: set[str]) -> set[str]:
    """The paths among `paths` that an artifact row of a run outside `doomed` also records."""
    shared: set[str] = set()
    for batch in queries.chunks(paths):
        query = select(ARTIFACT.c.path, ARTIFACT.c.run_id).where(ARTIFACT.c.path.in_(batch))
        shared |= {path for path, run_id in conn.execute(query) if run_id not in doomed}
    return shared


def plan_rm(conn: Connection, ids: Sequence[str], *, with_children: bool) -> Removal:
    """The runs `ids` (and, with `with_children`, everything below them); refuses to orphan children."""
    below = queries.descendants(conn, ids)
    if below and not with_children:
        children = sorted(below)[:5]
        raise ConfigError(
            f"{len(below)} run(s) descend from the runs to delete ({', '.join(children)}"
            f"{', …' if len(below) > 5 else ''}): pass --with-children to delete them too"
        )
    return _plan(conn, [*ids, *below])


def _plan(conn: Connection, ids: Sequence[str]) -> Removal:
    runs = _runs(conn, ids)
    artifacts = [a for found in queries.artifacts_of(conn, list(runs)).values() for a in found]
    shared = shared_paths(conn, [str(a.path) for a in artifacts], set(runs))
    return Removal(tuple(runs.values()), tuple(artifacts), tuple(sorted(Path(p) for p in shared)))


def _kept_by_subtree(conn: Connection, candidate: Run) -> bool:
    """True when deleting `candidate` with its subtree would take a live run: one that is completed,
    running or pending and not one of the candidate's own steps (`step-of`), or a running step."""
    below = queries.descendants(conn, [candidate.id])
    steps = {rid for rid, relation in below.items() if relation == "step-of"}
    steps |= set(queries.descendants(conn, list(steps))) if steps else set()
    for run in _runs(conn, list(below)).values():
        if run.status == "running" or (run.id not in steps and run.status in PROTECTED_STATUSES):
            return True
    return False


def plan_gc(conn: Connection, cutoff: datetime) -> Removal:
    """Failed/interrupted runs (not benches) created before `cutoff`, each with its subtree unless that
    holds a live run; and the artifact rows whose files are gone."""
    query = select(RUN).where(
        RUN.c.status.in_(GC_STATUSES), RUN.c.kind != "bench", RUN.c.created_at < cutoff
    )
    candidates = [Run.from_row(rec) for rec in conn.execute(query.order_by(RUN.c.id))]
    kept = [run for run in candidates if _kept_by_subtree(conn, run)]
    doomed = [run.id for run in candidates if run not in kept]
    plan = _plan(conn, [*doomed, *queries.descendants(conn, doomed)])
    doomed_ids = set(plan.run_ids)
    survivors = ARTIFACT.c.run_id.notin_(list(doomed_ids)) if doomed_ids else true()
    rows = conn.execute(select(ARTIFACT.c.path).where(survivors))
    missing = sum(not os.path.exists(rec.path) for rec in rows)
    return Removal(plan.runs, plan.artifacts, plan.shared, missing_rows=missing, kept=tuple(kept))


def delete_rows(conn: Connection, ids: Sequence[str]) -> None:
    """Delete the runs and every metric, artifact and edge row that names one of them."""
    for batch in queries.chunks(ids):
        conn.execute(delete(METRIC).where(METRIC.c.run_id.in_(batch)))
        conn.execute(delete(ARTIFACT).where(ARTIFACT.c.run_id.in_(batch)))
        conn.execute(delete(EDGE).where(or_(EDGE.c.parent_id.in_(batch), EDGE.c.child_id.in_(batch))))
    for batch in queries.chunks(ids):
        conn.execute(delete(RUN).where(RUN.c.id.in_(batch)))


def delete_missing_artifacts(conn: Connection) -> int:
    """Delete the artifact rows whose files are gone; returns how many."""
    gone = [rec.id for rec in conn.execute(select(ARTIFACT)) if not os.path.exists(rec.path)]
    for start in range(0, len(gone), queries.BATCH):
        conn.execute(delete(ARTIFACT).where(ARTIFACT.c.id.in_(gone[start : start + queries.BATCH])))
    return len(gone)


def unlink_files(artifacts: Sequence[Artifact], shared: set[str]) -> tuple[int, int]:
    """Remove the artifact files not in `shared` (once each); returns (files removed, bytes freed)."""
    removed, freed = 0, 0
    for path in dict.fromkeys(str(a.path) for a in artifacts):
        if path in shared or not os.path.isfile(path):
            continue
        size = os.path.getsize(path)
        os.unlink(path)
        removed, freed = removed + 1, freed + size
    return removed, freed
