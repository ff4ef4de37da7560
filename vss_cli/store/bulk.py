"""Store methods over many runs at once (listing, reports, deleting): a fixed number of statements
whatever the number of rows. `Store` inherits them; they use its transactions and `get_run`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Connection

from vss_cli.store import cleanup, queries
from vss_cli.store.rows import STALE_AFTER_S, Artifact, Run
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

    def count_runs(self, flt: queries.RunFilter) -> int:
        """How many runs match `flt`, ignoring its limit."""
        return self._read(lambda conn: queries.count_runs(conn, flt))

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

    def plan_removal(self, run_ids: Sequence[str], *, with_children: bool = False,
                     grace_s: float = STALE_AFTER_S) -> cleanup.Removal:
        """What deleting these runs (ids or unique prefixes) would remove; refuses to orphan children
        unless `with_children`, and refuses live runs and runs a surviving live run depends on."""
        ids = list(dict.fromkeys(self.get_run(ref).id for ref in run_ids))
        return self._read(lambda conn: cleanup.plan_rm(conn, ids, with_children=with_children, grace_s=grace_s))

    def plan_gc(self, *, older_than_s: float, roots: Sequence[Path] = ()) -> cleanup.Removal:
        """What `runs gc` would remove: failed/interrupted runs idle for longer than this, the artifact
        rows whose files this host cannot see, and orphan run folders under the run folders' parents
        and `roots` (see `cleanup.plan_gc`)."""
        try:
            cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than_s)
        except OverflowError:
            cutoff = datetime.min.replace(tzinfo=timezone.utc)

        def plan(conn: Connection, within: set[str] | None = None) -> cleanup.Removal:
            folders = [*cleanup.run_folder_roots(conn), *(Path(r).resolve() for r in roots)]
            return cleanup.plan_gc(conn, cutoff, within=within, roots=list(dict.fromkeys(folders)))

        return replace(self._read(plan), replan=plan)

    def remove(self, plan: cleanup.Removal, *, forget_missing: bool = False, orphans: bool = False) -> cleanup.Removal:
        """Delete what `plan` lists, after planning again inside the write transaction (`plan.replan`: rm
        refuses if anything changed, gc deletes only what is still garbage); with `forget_missing`, also
        the planned missing artifact rows whose files are still gone. Files go after the commit: the
        removed runs' artifacts no surviving run records, their own folders, and with `orphans` the
        orphan folders still unknown to the store."""
        planned = set(plan.run_ids)

        def txn(conn: Connection) -> tuple[cleanup.Removal, set[str], int, list[Path]]:
            now = plan.replan(conn, planned) if plan.replan is not None else plan
            ids = [run_id for run_id in now.run_ids if run_id in planned]
            runs = [run for run in now.runs if run.id in planned]
            shared = cleanup.shared_paths(conn, [str(a.path) for a in now.artifacts], set(ids))
            cleanup.delete_rows(conn, ids)
            forgotten = cleanup.forget_missing(conn, plan.missing) if forget_missing else 0
            folders = cleanup.own_folders(conn, runs)
            if orphans:
                folders += [p for p in now.orphans if p in set(plan.orphans)]
            done = cleanup.Removal(tuple(runs), tuple(a for a in now.artifacts if a.run_id in planned),
                                   kept=now.kept, missing=now.missing, orphans=now.orphans)
            return done, shared, forgotten, folders

        done, shared, forgotten, folders = self._write(txn)
        removed, freed = cleanup.unlink_files(done.artifacts, shared)
        more, more_bytes = cleanup.remove_folders(folders)
        return replace(done, shared=tuple(sorted(Path(p) for p in shared)), forgotten=forgotten,
                       files_removed=removed + more, bytes_freed=freed + more_bytes)
