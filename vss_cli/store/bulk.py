"""Store methods over many runs at once (listing, reports, deleting): a fixed number of statements
whatever the number of rows. `Store` inherits them; they use its transactions and `get_run`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Connection

from vss_cli.store import cleanup, queries
from vss_cli.store.rows import Artifact, Run
from vss_cli.store.tables import KINDS, STATUSES
from vss_cli.store.tables import check_choice as _check


class BulkStore:
    """Batch reads and deletion; mixed into `Store`, whose `_read`, `_write` and
    `get_run` they call."""

    # -- batch reads: a fixed number of statements for any number of runs -------------------------

    def overview(self, flt: queries.RunFilter, *, metric_keys: Sequence[str] | None = None) -> list[queries.RunOverview]:
        """Runs matching `flt` (newest first) with their parent edges and latest metrics (only
        `metric_keys` when given; none for an empty tuple)."""
        for value, allowed, what in ((flt.kind, KINDS, "run kind"), (flt.status, (*STATUSES, queries.STALE), "run status")):
            if value is not None:
                _check(value, allowed, what)
        return self._read(lambda conn: queries.overview(conn, flt, metric_keys))

    def latest_metrics_many(self, run_ids: Sequence[str], keys: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """{run id: {key: last value}} for many runs at once (what `latest_metrics` gives for one)."""
        return self._read(lambda conn: queries.latest_metrics(conn, run_ids, keys))

    def parents_many(self, run_ids: Sequence[str]) -> dict[str, list[tuple[str, Run]]]:
        """{run id: [(relation, parent run)]} for many runs at once, in the order edges were added."""
        return self._read(lambda conn: queries.neighbours(conn, run_ids, upward=True))

    def children_many(self, run_ids: Sequence[str]) -> dict[str, list[tuple[str, Run]]]:
        """{run id: [(relation, child run)]} for many runs at once, in the order edges were added."""
        return self._read(lambda conn: queries.neighbours(conn, run_ids, upward=False))

    def artifacts_many(self, run_ids: Sequence[str]) -> dict[str, list[Artifact]]:
        """{run id: [artifact]} for many runs at once, in the order they were recorded."""
        return self._read(lambda conn: queries.artifacts_of(conn, run_ids))

    def run_ids(self) -> list[str]:
        """Every run id, sorted."""
        return self._read(queries.all_ids)

    # -- deleting -------------------------------------------------------------------------------

    def plan_removal(self, run_ids: Sequence[str], *, with_children: bool = False) -> cleanup.Removal:
        """What deleting these runs (ids or unique prefixes) would remove; refuses to orphan children
        unless `with_children`."""
        ids = list(dict.fromkeys(self.get_run(ref).id for ref in run_ids))
        return self._read(lambda conn: cleanup.plan_rm(conn, ids, with_children=with_children))

    def plan_gc(self, *, older_than_s: float) -> cleanup.Removal:
        """What `runs gc` would remove: failed/interrupted runs older than this (see `cleanup.plan_gc`)."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than_s)
        return self._read(lambda conn: cleanup.plan_gc(conn, cutoff))

    def remove(self, plan: cleanup.Removal, *, missing_artifacts: bool = False) -> cleanup.Removal:
        """Delete the planned runs with every row that names them (and, with `missing_artifacts`, the
        artifact rows whose files are gone), then the files no surviving run records."""
        ids = plan.run_ids
        paths = [str(a.path) for a in plan.artifacts]

        def txn(conn: Connection) -> tuple[set[str], int]:
            shared = cleanup.shared_paths(conn, paths, set(ids))
            cleanup.delete_rows(conn, ids)
            return shared, cleanup.delete_missing_artifacts(conn) if missing_artifacts else 0

        shared, missing = self._write(txn)
        removed, freed = cleanup.unlink_files(plan.artifacts, shared)
        return cleanup.Removal(plan.runs, plan.artifacts, tuple(sorted(Path(p) for p in shared)),
                               missing_rows=missing, files_removed=removed, bytes_freed=freed, kept=plan.kept)
