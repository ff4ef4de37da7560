"""The cross-process work queue over the store: claims, heartbeats and liveness (no torch).

A worker claims a run with the store's check-and-set (`Store.claim_run`) and heartbeats it from a
background thread (`Heartbeat`). A worker is named by `identity.worker_id` (host, pid and a random
per-process token). A running run whose heartbeat is older than a grace period, or whose worker
process is visibly gone (same kernel and PID namespace, SIGKILL), may be taken over by another worker
(`take`); a live holder's run never is.

`RunStore` is the part of the store a step workflow (prune, train, eval) uses; `StepStore` implements
it over a `Store`, adding the cell's `step-of` edge to every run a step creates (in the same
transaction) and heartbeating every run it creates or claims.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from vss_cli.errors import RunTakenOver
from vss_cli.store.identity import holder, is_live, is_stale, refuse_live, worker_id, worker_is_dead  # noqa: F401
from vss_cli.store.rows import Artifact, Run
from vss_cli.store.store import Store


class RunStore(Protocol):
    """What the prune, train and eval workflows call on the store they are given (`Store`, `StepStore`)."""

    def create_run(self, *, kind: str, config: dict, parents: Sequence[tuple[str, str]] = (), status: str = "running",
                   config_key: str | None = None, name: str | None = None, versions: Mapping[str, Any] | None = None,
                   out_dir: str | Path | None = None) -> Run: ...
    def update_run(self, run_id: str, *, name: str | None = None, out_dir: str | Path | None = None,
                   versions: Mapping[str, Any] | None = None) -> Run: ...
    def set_status(self, run_id: str, status: str, *, error: str | None = None) -> None: ...
    def claim_run(self, run_id: str, *, worker: str | None = None, stale_after_s: float, also: Sequence[str] = (),
                  if_attempt: int | None = None) -> bool: ...
    def heartbeat(self, run_id: str, *, worker: str | None = None) -> None: ...
    def add_artifact(self, run_id: str, *, kind: str, path: str | Path) -> Artifact: ...
    def add_metrics(self, run_id: str, metrics: Mapping[str, Any], *, step: int | None = None) -> int: ...
    def get_run(self, id_or_prefix: str) -> Run: ...
    def list_runs(self, *, kind: str | None = None, status: str | None = None, limit: int | None = None,
                  config_key: str | None = None) -> list[Run]: ...
    def parents(self, run_id: str) -> list[tuple[str, Run]]: ...
    def artifacts(self, run_id: str, kind: str | None = None) -> list[Artifact]: ...
    def artifact_path(self, run_id: str, kind: str = "checkpoint") -> Path: ...
    def run_for_artifact(self, path: str | Path, kind: str | None = None) -> Run | None: ...


class Heartbeat:
    """A daemon thread heartbeating the runs this process works on, so however long an epoch or a
    timing run takes, only a dead (or hung) worker's runs go stale. A run another worker has taken
    over (or that ended) is dropped from the set, so a slow worker never keeps a new holder's run alive."""

    def __init__(self, store: Store, interval_s: float, run_ids: Sequence[str] = ()) -> None:
        self.store, self.interval_s, self.worker = store, interval_s, worker_id()
        self._ids: set[str] = set(run_ids)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vss-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def add(self, run_id: str) -> None:
        with self._lock:
            self._ids.add(run_id)

    def discard(self, *run_ids: str) -> None:
        with self._lock:
            self._ids.difference_update(run_ids)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                ids = list(self._ids)
            for run_id in ids:
                try:
                    self.store.heartbeat(run_id, worker=self.worker)
                except RunTakenOver:  # another worker holds it now (or it ended): never keep it alive
                    self.discard(run_id)
                except Exception:  # noqa: BLE001 - a missed beat only makes the run look older
                    pass


class StepStore:
    """A `RunStore` for the steps of one cell: the runs it creates get the extra parent edges (the cell,
    `step-of`) in the same transaction, and every run it creates or claims is heartbeaten."""

    def __init__(self, store: Store, beat: Heartbeat, parents: Sequence[tuple[str, str]] = ()) -> None:
        self._store, self._beat, self._parents = store, beat, list(parents)
        self.touched: list[str] = []

    def create_run(self, *, kind: str, config: dict, parents: Sequence[tuple[str, str]] = (), **fields: Any) -> Run:
        run = self._store.create_run(kind=kind, config=config, parents=[*parents, *self._parents], **fields)
        self._track(run.id)
        return run

    def claim_run(self, run_id: str, **kwargs: Any) -> bool:
        claimed = self._store.claim_run(run_id, **kwargs)
        if claimed:
            self._track(run_id)
        return claimed

    def _track(self, run_id: str) -> None:
        self.touched.append(run_id)
        self._beat.add(run_id)

    def update_run(self, run_id: str, **fields: Any) -> Run:  # name, out_dir, versions
        return self._store.update_run(run_id, **fields)

    def set_status(self, run_id: str, status: str, *, error: str | None = None) -> None:
        self._store.set_status(run_id, status, error=error)

    def heartbeat(self, run_id: str, *, worker: str | None = None) -> None:
        self._store.heartbeat(run_id, worker=worker)

    def add_artifact(self, run_id: str, *, kind: str, path: str | Path) -> Artifact:
        return self._store.add_artifact(run_id, kind=kind, path=path)

    def add_metrics(self, run_id: str, metrics: Mapping[str, Any], *, step: int | None = None) -> int:
        return self._store.add_metrics(run_id, metrics, step=step)

    def get_run(self, id_or_prefix: str) -> Run:
        return self._store.get_run(id_or_prefix)

    def list_runs(self, **filters: Any) -> list[Run]:  # kind, status, limit, config_key
        return self._store.list_runs(**filters)

    def parents(self, run_id: str) -> list[tuple[str, Run]]:
        return self._store.parents(run_id)

    def artifacts(self, run_id: str, kind: str | None = None) -> list[Artifact]:
        return self._store.artifacts(run_id, kind)

    def artifact_path(self, run_id: str, kind: str = "checkpoint") -> Path:
        return self._store.artifact_path(run_id, kind)

    def run_for_artifact(self, path: str | Path, kind: str | None = None) -> Run | None:
        return self._store.run_for_artifact(path, kind)


def take(store: Store, run: Run, grace_s: float, *, retry: bool = False) -> bool:
    """Claim `run` if nobody live holds it: pending, interrupted, stale, or its worker's process is gone;
    with `retry`, also a failed or completed run, provided nobody took it since it was looked at."""
    if run.status in ("pending", "interrupted"):
        return store.claim_run(run.id, stale_after_s=grace_s)
    if run.status == "running":
        if worker_is_dead(run.worker):
            return store.claim_run(run.id, stale_after_s=grace_s, also=("running",), if_attempt=run.attempt)
        return is_stale(run, grace_s) and store.claim_run(run.id, stale_after_s=grace_s)
    if retry:
        return store.claim_run(run.id, stale_after_s=grace_s, also=(run.status,), if_attempt=run.attempt)
    return False


def poll_s(grace_s: float) -> float:
    """How long a waiting worker sleeps between looks at the queue."""
    return max(0.2, min(2.0, grace_s / 10))
