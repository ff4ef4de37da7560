"""Issue 22, the store's side: a live run is never taken over, and clean-up never loses work.

Ownership: a worker is `host:pid:scope.token`; a pid is only trusted inside the same kernel boot and
PID namespace (`scope`), elsewhere the heartbeat's age alone decides.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from vss_cli.errors import RunTakenOver
from vss_cli.store import Store, worker_id
from vss_cli.store.identity import WorkerRef, process_scope
from vss_cli.store.queue import is_live, take, worker_is_dead
from vss_cli.store.tables import RUN


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _set(store: Store, run_id: str, **values) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(RUN).where(RUN.c.id == run_id).values(**values))


def _ago(seconds: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


def test_worker_ids_carry_a_token_and_a_scope():
    ref = WorkerRef.parse(worker_id())
    assert (ref.host, ref.pid, ref.scope) == (socket.gethostname(), os.getpid(), process_scope())
    assert WorkerRef.parse("old-host:42") == WorkerRef("old-host", 42, None)


def test_a_pid_from_another_pid_namespace_proves_nothing(store_url):
    """Same host name and a pid that is gone here, but another PID namespace (a container with host
    networking): the worker is alive as long as it heartbeats, and nobody takes its run."""
    store = Store(store_url)
    pid = _dead_pid()
    foreign = f"{socket.gethostname()}:{pid}:{'f' * 8 if process_scope() != 'f' * 8 else 'e' * 8}.0001"
    local = f"{socket.gethostname()}:{pid}:{process_scope()}.0002"
    assert not worker_is_dead(foreign) and worker_is_dead(local)
    assert not worker_is_dead(f"{socket.gethostname()}:{pid}")  # a row from before worker tokens

    run = store.create_run(kind="cell", config={"c": 1}, status="pending", config_key="k")
    assert store.claim_run(run.id, worker=foreign, stale_after_s=60)
    held = store.get_run(run.id)
    assert is_live(held, 60) and not take(store, held, 60)
    assert store.get_run(run.id).worker == foreign

    _set(store, run.id, worker=local)  # the same pid in this namespace: gone, taken at once
    assert take(store, store.get_run(run.id), 60)
    assert store.get_run(run.id).worker == worker_id()


def test_a_worker_whose_run_was_taken_over_stops_at_its_next_heartbeat(store_url):
    store = Store(store_url)
    run = store.create_run(kind="train", config={"t": 1})
    me = worker_id()
    store.heartbeat(run.id, worker=me)
    _set(store, run.id, heartbeat_at=_ago(3600))
    assert store.claim_run(run.id, worker="other:1:abcdef01.0001", stale_after_s=60)
    before = store.get_run(run.id).heartbeat_at
    with pytest.raises(RunTakenOver, match="other:1:abcdef01.0001"):
        store.heartbeat(run.id, worker=me)
    assert store.get_run(run.id).heartbeat_at == before


TRAIN = ["train", "--epochs", "1", "--width", "0.125", "--input-size", "32,48", "--batch-size", "8",
         "--max-iters-per-epoch", "2", "--device", "cpu"]


def _vss(*args: str, db, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "VSS_DB": str(db), "VSS_QUIET": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vss_cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_resume_refuses_a_run_a_live_worker_holds(tmp_path):
    """`vss train --resume` names the live holder and exits 2 (it used to claim any unfinished run,
    and two processes trained one run); once the holder's heartbeat is stale it resumes the run."""
    db = tmp_path / "r.db"
    assert _vss(*TRAIN, db=db, cwd=tmp_path).returncode == 0
    store = Store(db)
    (run,) = store.list_runs(kind="train")
    holder = f"{socket.gethostname()}:{_dead_pid()}:{'f' * 8 if process_scope() != 'f' * 8 else 'e' * 8}.0001"
    _set(store, run.id, status="running", worker=holder, heartbeat_at=_ago(5))

    refused = _vss(*TRAIN, "--resume", db=db, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert f"run {run.id} is held by worker {holder}" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert store.get_run(run.id).worker == holder and len(store.list_runs(kind="train")) == 1

    _set(store, run.id, heartbeat_at=_ago(3600))
    resumed = _vss(*TRAIN, "--resume", db=db, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    again = store.get_run(run.id)
    assert (again.status, again.attempt) == ("completed", run.attempt + 1)
