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

from vss_cli.errors import ConfigError, RunTakenOver
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


# -- clean-up that cannot lose work -------------------------------------------------------------------


def _old(store: Store, *run_ids: str, days: float = 10) -> None:
    when = _ago(days * 86400)
    for run_id in run_ids:
        _set(store, run_id, created_at=when, started_at=when, finished_at=when, heartbeat_at=when)


def _file(path, size: int = 8):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def test_gc_keeps_hand_made_work_below_an_interrupted_cell(store_url, tmp_path):
    """Issue 22.1: a cell was interrupted; its prune step was fine-tuned and evaluated by hand. gc drops
    the cell's failed fine-tune step only; the hand-made fine-tune, its eval, their files and the prune
    step they depend on all stay."""
    store = Store(store_url)
    cell = store.create_run(kind="cell", config={"c": 1}, status="interrupted")
    prune = store.create_run(kind="prune", config={}, parents=[(cell.id, "step-of")], status="completed")
    step_tune = store.create_run(kind="finetune", config={"s": 1}, status="failed",
                                 parents=[(prune.id, "finetuned-from"), (cell.id, "step-of")])
    tune = store.create_run(kind="finetune", config={"h": 1}, parents=[(prune.id, "finetuned-from")], status="completed")
    ev = store.create_run(kind="eval", config={}, parents=[(tune.id, "evaluates")], status="completed")
    files = {run.id: _file(tmp_path / f"{run.id}.pt") for run in (prune, step_tune, tune, ev)}
    for run_id, path in files.items():
        store.add_artifact(run_id, kind="checkpoint", path=path)
    _old(store, cell.id, prune.id, step_tune.id)  # the hand-made runs are recent: only age-independent rules protect them

    done = store.remove(store.plan_gc(older_than_s=1))
    assert done.run_ids == [step_tune.id] and not files[step_tune.id].exists()
    assert {r.id for r in store.list_runs()} == {cell.id, prune.id, tune.id, ev.id}
    assert all(files[run_id].exists() for run_id in (prune.id, tune.id, ev.id))
    assert [r.id for r, _ in store.plan_gc(older_than_s=1).kept] == [cell.id]


def test_gc_never_drops_artifact_rows_of_files_it_cannot_see(store_url, tmp_path):
    """Issue 22.2: the grid folder is unmounted; gc reports the rows and keeps them. `--forget-missing`
    drops them only once confirmed."""
    store = Store(store_url)
    prune = store.create_run(kind="prune", config={}, status="completed")
    ckpt = _file(tmp_path / "mnt" / "grid" / "pruned.pt")
    store.add_artifact(prune.id, kind="checkpoint", path=ckpt)
    (tmp_path / "mnt").rename(tmp_path / "unmounted")
    plan = store.plan_gc(older_than_s=0)
    assert [a.path for a in plan.missing] == [ckpt.resolve()]
    store.remove(plan)
    (tmp_path / "unmounted").rename(tmp_path / "mnt")
    assert store.artifact_path(prune.id) == ckpt.resolve()


def test_gc_cli_reports_missing_files_and_forgets_them_only_when_asked(tmp_path):
    db = tmp_path / "g.db"
    store = Store(db)
    prune = store.create_run(kind="prune", config={}, status="completed")
    ckpt = _file(tmp_path / "grid" / "pruned.pt")
    store.add_artifact(prune.id, kind="checkpoint", path=ckpt)
    ckpt.unlink()
    shown = _vss("runs", "gc", "--older-than", "1s", "--yes", db=db, cwd=tmp_path)
    assert shown.returncode == 0 and "1 artifact row(s) of kept runs point at files this host cannot see" in shown.stderr
    assert str(ckpt) in shown.stderr and len(store.artifacts(prune.id)) == 1
    refused = _vss("runs", "gc", "--forget-missing", db=db, cwd=tmp_path)
    assert refused.returncode == 2 and "without --yes" in refused.stderr and len(store.artifacts(prune.id)) == 1
    forgot = _vss("runs", "gc", "--forget-missing", "--yes", db=db, cwd=tmp_path)
    assert forgot.returncode == 0 and "forgot 1 artifact row(s)" in forgot.stdout
    assert store.artifacts(prune.id) == []


def test_rm_with_children_leaves_the_cells_another_grid_reused(store_url, tmp_path):
    """Issue 22.3: bench B reused two of bench A's cells (`--skip-existing` adds its `cell-of` edge);
    `rm A --with-children` deletes A and its own cell only, and B keeps its cells, steps and files."""
    store = Store(store_url)
    a = store.create_run(kind="bench", config={"b": "a"}, status="completed")
    b = store.create_run(kind="bench", config={"b": "b"}, status="completed")
    cells = [store.create_run(kind="cell", config={"c": i}, parents=[(a.id, "cell-of")], status="completed")
             for i in range(3)]
    steps = [store.create_run(kind="prune", config={"c": i}, parents=[(c.id, "step-of")], status="completed")
             for i, c in enumerate(cells)]
    files = [_file(tmp_path / f"cell{i}" / "pruned.pt") for i in range(3)]
    for step, path in zip(steps, files, strict=True):
        store.add_artifact(step.id, kind="checkpoint", path=path)
    for cell in cells[1:]:
        store.add_edge(b.id, cell.id, "cell-of")

    plan = store.plan_removal([a.id], with_children=True)
    assert sorted(plan.run_ids) == sorted([a.id, cells[0].id, steps[0].id])
    assert sorted(r.id for r, _ in plan.kept) == sorted(c.id for c in cells[1:])
    store.remove(plan)
    assert not files[0].exists() and files[1].exists() and files[2].exists()
    assert sorted(r.id for rel, r in store.children(b.id)) == sorted(c.id for c in cells[1:])
    assert {r.id for r in store.list_runs()} == {b.id, *(c.id for c in cells[1:]), *(s.id for s in steps[1:])}


def test_rm_refuses_a_running_run_and_what_live_runs_depend_on(store_url, tmp_path):
    """Issue 22.4: rm of a run whose worker heartbeats is refused (naming the worker), and so is rm of a
    run whose completed child is not being deleted."""
    store = Store(store_url)
    running = store.create_run(kind="train", config={"r": 1})
    with pytest.raises(ConfigError, match=f"run {running.id} .*held by worker {worker_id()}"):
        store.plan_removal([running.id])
    _set(store, running.id, heartbeat_at=_ago(3600))  # its worker stopped heartbeating long ago: dead
    store.remove(store.plan_removal([running.id]))
    assert store.list_runs() == []


def test_the_deletion_checks_again_inside_its_transaction(store_url):
    """Issue 22.4: a run that became running (or got a new child) between the plan and the answer is
    not deleted: gc leaves it, rm refuses and deletes nothing."""
    store = Store(store_url)
    failed = store.create_run(kind="cell", config={"c": 1}, status="failed")
    other = store.create_run(kind="train", config={"c": 2}, status="failed")
    _old(store, failed.id, other.id)
    plan = store.plan_gc(older_than_s=60)
    assert sorted(plan.run_ids) == sorted([failed.id, other.id])
    assert store.claim_run(failed.id, stale_after_s=60, also=("failed",), if_attempt=failed.attempt)
    done = store.remove(plan)
    assert done.run_ids == [other.id] and store.get_run(failed.id).status == "running"

    parent = store.create_run(kind="train", config={"p": 1}, status="completed")
    plan = store.plan_removal([parent.id], with_children=True)
    store.create_run(kind="prune", config={}, parents=[(parent.id, "pruned-from")], status="completed")
    with pytest.raises(ConfigError, match="changed since they were listed"):
        store.remove(plan)
    assert store.get_run(parent.id).status == "completed"


def test_gc_lists_and_removes_orphan_run_folders(tmp_path):
    """Issue 22.11: a kill after rm committed leaves a run folder no row knows; gc lists it, and removes it
    only with --orphans. A deleted run's own folder goes with it (files no artifact row recorded too)."""
    db = tmp_path / "o.db"
    store = Store(db)
    keep = store.create_run(kind="train", config={"k": 1}, status="completed", out_dir=tmp_path / "runs" / "train" / "x")
    store.update_run(keep.id, out_dir=tmp_path / "runs" / "train" / keep.id)
    gone = store.create_run(kind="train", config={"k": 2}, status="interrupted")
    folder = tmp_path / "runs" / "train" / gone.id
    store.update_run(gone.id, out_dir=folder)
    store.add_artifact(gone.id, kind="last-checkpoint", path=_file(folder / "last.pt"))
    _file(folder / "events.log")  # written by the run, never recorded
    orphan = tmp_path / "runs" / "train" / ("0" * 20)
    _file(orphan / "last.pt", 100)
    _old(store, gone.id)
    old = _ago(3600).timestamp()
    for path in (orphan / "last.pt", orphan):
        os.utime(path, (old, old))

    listed = _vss("runs", "gc", "--older-than", "1m", "--yes", db=db, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "1 run folder(s) no run row knows" in listed.stderr and str(orphan) in listed.stderr
    assert not folder.exists() and orphan.exists() and "2 file(s)" in listed.stdout
    removed = _vss("runs", "gc", "--older-than", "1m", "--orphans", "--yes", db=db, cwd=tmp_path)
    assert removed.returncode == 0 and not orphan.exists() and "(100 bytes)" in removed.stdout
    assert [r.id for r in store.list_runs()] == [keep.id]


def test_rm_refuses_to_delete_what_a_kept_run_depends_on(store_url):
    """A cell another grid holds is kept by `rm --with-children`; the baseline its prune step was pruned
    from cannot go then: refused, nothing deleted."""
    store = Store(store_url)
    base = store.create_run(kind="train", config={"t": 1}, status="completed")
    a = store.create_run(kind="bench", config={"b": "a"}, parents=[(base.id, "baseline-of")], status="completed")
    b = store.create_run(kind="bench", config={"b": "b"}, status="completed")
    cell = store.create_run(kind="cell", config={}, parents=[(a.id, "cell-of"), (b.id, "cell-of")], status="completed")
    step = store.create_run(kind="prune", config={}, parents=[(cell.id, "step-of"), (base.id, "pruned-from")],
                            status="completed")
    with pytest.raises(ConfigError, match=f"prune run {step.id} \\(completed\\) is pruned-from run {base.id}"):
        store.plan_removal([base.id], with_children=True)
    assert len(store.list_runs()) == 5


def test_an_interrupted_training_run_records_its_checkpoints(tmp_path):
    """Issue 22.11: SIGTERM after the first epoch: the run is interrupted with its last.pt (and best.pt)
    recorded, so gc sees them; --resume finishes it and the rows then match the final files."""
    import signal
    import time

    from vss_cli.store import artifact_intact

    db = tmp_path / "i.db"
    env = {**os.environ, "VSS_DB": str(db), "VSS_QUIET": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "vss_cli", *TRAIN]
    args[args.index("--epochs") + 1], args[args.index("--max-iters-per-epoch") + 1] = "3", "15"
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("runs/train/*/last.pt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    store = Store(db)
    (run,) = store.list_runs(kind="train")
    assert run.status == "interrupted"
    recorded = {a.kind: a for a in store.artifacts(run.id)}
    assert recorded["last-checkpoint"].path.name == "last.pt" and all(map(artifact_intact, recorded.values()))
    assert store.plan_gc(older_than_s=0).planned_bytes == sum(a.bytes for a in recorded.values())

    done = subprocess.run([*args, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    final = store.artifacts(run.id)
    assert sorted(a.kind for a in final) == ["checkpoint", "last-checkpoint"] and all(map(artifact_intact, final))


def test_two_grids_started_at_once_in_one_folder_cannot_both_own_it(store_url, tmp_path):
    """Issue 22.11: two different grids created at the same moment with one --out-dir: one bench run owns
    the folder, the other is refused with nothing written (each used to overwrite the other's summary)."""
    import threading

    from vss_cli.errors import ConfigError as Refused

    folder = tmp_path / "grid"
    start, results = threading.Barrier(2), {}

    def create(key: str) -> None:
        with Store(store_url) as store:
            start.wait()
            try:
                results[key] = store.create_run_once(kind="bench", config={"g": key}, config_key=key * 64,
                                                     out_dir=folder, own_out_dir=True)[0].id
            except Refused as exc:
                results[key] = exc

    threads = [threading.Thread(target=create, args=(key,)) for key in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [v for v in results.values() if isinstance(v, str)]
    lost = [v for v in results.values() if isinstance(v, Exception)]
    assert len(won) == 1 and len(lost) == 1 and f"belongs to another grid (bench run {won[0]})" in str(lost[0])
    assert [r.id for r in Store(store_url).list_runs(kind="bench")] == won


def test_a_worker_whose_run_is_taken_over_mid_training_writes_nothing_more(tmp_path):
    """Issue 22.5: another worker claims the run while `vss train` is between epochs: the process stops
    (exit 2, one line) before writing another checkpoint or metric row; the run stays the new holder's."""
    import hashlib
    import signal  # noqa: F401 - the process stops by itself
    import time

    db = tmp_path / "t.db"
    env = {**os.environ, "VSS_DB": str(db), "VSS_QUIET": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "vss_cli", *TRAIN]
    args[args.index("--epochs") + 1], args[args.index("--max-iters-per-epoch") + 1] = "6", "15"
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("runs/train/*/last.pt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    store = Store(db)
    (run,) = store.list_runs(kind="train")
    other = "elsewhere:1:abcdef01.0001"
    _set(store, run.id, heartbeat_at=_ago(3600))
    assert store.claim_run(run.id, worker=other, stale_after_s=60)
    last = next(tmp_path.glob("runs/train/*/last.pt"))
    written = hashlib.sha256(last.read_bytes()).hexdigest()
    epochs = {m.step for m in store.metrics(run.id, "train_loss")}
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]
    assert f"run {run.id} is now running for worker {other}" in _one_line_error(err)
    assert hashlib.sha256(last.read_bytes()).hexdigest() == written
    assert {m.step for m in store.metrics(run.id, "train_loss")} <= epochs | {min(set(range(6)) - epochs)}
    again = store.get_run(run.id)
    assert (again.status, again.worker) == ("running", other)


def _one_line_error(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    return errors[0]


def test_the_heartbeat_thread_never_keeps_a_taken_over_run_alive(store_url):
    import time

    from vss_cli.store.queue import Heartbeat

    store = Store(store_url)
    mine = store.create_run(kind="cell", config={"c": 1})
    theirs = store.create_run(kind="cell", config={"c": 2})
    pending = store.create_run(kind="bench", config={"b": 1}, status="pending")  # nobody holds it yet
    _set(store, theirs.id, heartbeat_at=_ago(3600))
    assert store.claim_run(theirs.id, worker="elsewhere:1:abcdef01.0001", stale_after_s=60)
    _set(store, theirs.id, heartbeat_at=_ago(100))
    with Heartbeat(store, 0.05, (mine.id, theirs.id, pending.id)) as beat:
        time.sleep(0.6)
        assert beat._ids == {mine.id, pending.id}
    assert store.get_run(theirs.id).heartbeat_at < _ago(90)
    assert store.get_run(mine.id).heartbeat_at > _ago(5) and store.get_run(pending.id).heartbeat_at is not None
