"""The store's writes behind the cross-process work queue (`queue.py`): a worker claims a run
(check-and-set), heartbeats it while it holds it, and finishes it (compare-and-set), each one
conditional UPDATE, so two workers never both hold or both complete a run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, or_, update

from vss_cli.errors import RunTakenOver
from vss_cli.store.identity import worker_id
from vss_cli.store.reads import require_run
from vss_cli.store.tables import RUN, STATUSES, TERMINAL_STATUSES
from vss_cli.store.tables import check_choice as _check
from vss_cli.store.writes import finite_values, insert_metrics, utc_now

CLAIMABLE_STATUSES = ("pending", "interrupted")


class RunClaims:
    """Claiming, heartbeating and finishing a run; mixed into `Store`, whose `_write` they call."""

    def heartbeat(self, run_id: str, *, worker: str | None = None) -> None:
        """Record that the run's worker is still alive (see `claim_run`). With `worker`, only while that
        worker still holds the unfinished run: RunTakenOver (nothing written) once another worker has
        claimed it (or it ended)."""
        held = RUN.c.id == run_id
        if worker is not None:  # a run nobody holds yet (a pending grid) may be heartbeaten too
            held = held & or_(RUN.c.worker == worker, RUN.c.worker.is_(None)) & RUN.c.status.in_(("running", "pending"))

        def txn(conn: Connection) -> None:
            if conn.execute(update(RUN).where(held).values(heartbeat_at=utc_now())).rowcount == 1:
                return
            row = require_run(conn, run_id)
            raise RunTakenOver(f"run {run_id} is now {row.status} for worker {row.worker} (attempt {row.attempt}), "
                               f"not {worker}: this process stops and leaves the run to its holder")

        self._write(txn)

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
        now = utc_now()
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
        values, now = finite_values(metrics or {}), utc_now()
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
