"""Lineage store: runs and lineage, metrics and artifacts, --skip-existing, claims, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import update

from vss_cli.errors import CheckpointError, ConfigError, RunNotFound
from vss_cli.store import Store, config_key, worker_id
from vss_cli.store.migrations import MIGRATIONS
from vss_cli.store.tables import RUN


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _completed_with_checkpoint(store: Store, path: Path, config: dict) -> str:
    run = store.create_run(kind="train", config=config)
    store.add_artifact(run.id, kind="checkpoint", path=path)
    store.set_status(run.id, "completed")
    return run.id



# -- runs --------------------------------------------------------------------------------------


def test_create_and_get_run(store: Store) -> None:
    config = {"model": {"name": "tiny", "width": 0.5}, "lr": 0.01}
    run = store.create_run(kind="train", config=config, name="base", versions={"vss": "0.1.0"}, out_dir="/o")
    got = store.get_run(run.id)
    assert got == run
    assert got.config == config and got.versions == {"vss": "0.1.0"}
    assert got.config_key == config_key(config)
    assert (got.status, got.attempt, got.out_dir, got.name) == ("running", 1, "/o", "base")
    assert got.worker == worker_id() and f":{os.getpid()}:" in got.worker
    assert got.created_at.tzinfo is not None and got.started_at == got.heartbeat_at == got.created_at
    pending = store.create_run(kind="cell", config={"c": 1}, status="pending", config_key="k")
    assert (pending.attempt, pending.started_at, pending.worker, pending.config_key) == (0, None, None, "k")


def test_get_run_by_prefix_ambiguous_and_unknown(store: Store) -> None:
    a = store.create_run(kind="train", config={"i": 1})
    b = store.create_run(kind="train", config={"i": 2})
    common = os.path.commonprefix([a.id, b.id])
    unique = b.id[: len(common) + 1]
    assert store.get_run(unique.upper()).id == b.id
    with pytest.raises(RunNotFound, match="matches several runs") as exc:
        store.get_run(common)
    assert a.id in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(RunNotFound, match=r"no run matches 'nope': see `vss runs list`"):
        store.get_run("nope")
    with pytest.raises(RunNotFound):
        store.get_run("")


def test_bad_kind_status_relation_and_parent(store: Store) -> None:
    with pytest.raises(ConfigError, match="unknown run kind 'fit'"):
        store.create_run(kind="fit", config={})
    with pytest.raises(ConfigError, match="unknown run status"):
        store.create_run(kind="train", config={}, status="done")
    with pytest.raises(RunNotFound):
        store.create_run(kind="prune", config={}, parents=[("0" * 20, "pruned-from")])
    parent = store.create_run(kind="train", config={})
    with pytest.raises(ConfigError, match="unknown relation"):
        store.create_run(kind="prune", config={}, parents=[(parent.id, "derived")])
    assert [r.id for r in store.list_runs()] == [parent.id]  # nothing half-written


def test_status_update_and_heartbeat(store: Store) -> None:
    run = store.create_run(kind="train", config={})
    store.update_run(run.id, out_dir="/runs/x", name="renamed")
    store.heartbeat(run.id)
    store.set_status(run.id, "failed", error="CUDA out of memory")
    got = store.get_run(run.id)
    assert (got.status, got.error, got.out_dir, got.name, got.config) == (
        "failed", "CUDA out of memory", "/runs/x", "renamed", {},
    )  # fmt: skip
    assert got.finished_at >= got.heartbeat_at > run.heartbeat_at
    assert got.duration_s >= 0
    with pytest.raises(RunNotFound):
        store.heartbeat("f" * 20)


def test_list_runs_newest_first_with_filters(store: Store) -> None:
    ids = [store.create_run(kind=k, config={"i": i}).id for i, k in enumerate(["train", "prune", "train"])]
    store.set_status(ids[0], "completed")
    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert [r.id for r in store.list_runs(kind="train")] == [ids[2], ids[0]]
    assert [r.id for r in store.list_runs(status="completed")] == [ids[0]]
    assert len(store.list_runs(limit=2)) == 2
    key = store.get_run(ids[1]).config_key
    assert [r.id for r in store.list_runs(config_key=key)] == [ids[1]]
    assert store.list_runs(config_key=key, kind="train") == []


def test_edges_parents_children_and_lineage(store: Store) -> None:
    train = store.create_run(kind="train", config={})
    prune = store.create_run(kind="prune", config={}, parents=[(train.id, "pruned-from")])
    tune = store.create_run(kind="finetune", config={}, parents=[(prune.id, "finetuned-from")])
    ev = store.create_run(kind="eval", config={}, parents=[(tune.id, "evaluates"), (train.id, "baseline-of")])
    store.add_edge(train.id, prune.id, "pruned-from")  # already there: no duplicate, no error
    with pytest.raises(ConfigError):
        store.add_edge(train.id, train.id, "pruned-from")
    assert [(rel, r.id) for rel, r in store.parents(ev.id)] == [
        ("evaluates", tune.id),
        ("baseline-of", train.id),
    ]
    assert [(rel, r.id) for rel, r in store.children(train.id)] == [
        ("pruned-from", prune.id),
        ("baseline-of", ev.id),
    ]
    lin = store.lineage(tune.id)
    assert lin.run.id == tune.id
    assert [(n.relation, n.run.id) for n in lin.ancestors] == [("finetuned-from", prune.id)]
    assert [(n.relation, n.run.id) for n in lin.ancestors[0].nodes] == [("pruned-from", train.id)]
    assert [(n.relation, n.run.id, n.nodes) for n in lin.descendants] == [("evaluates", ev.id, ())]
    assert lin.to_dict()["ancestors"][0]["nodes"][0]["run"] == train.id


def test_metrics_skip_non_finite_and_keep_history(store: Store) -> None:
    run = store.create_run(kind="train", config={})
    written = store.add_metrics(
        run.id, {"loss": 1.5, "nan": float("nan"), "inf": float("inf"), "s": "x", "n": None}, step=0
    )
    assert written == 1
    store.add_metrics(run.id, {"loss": 0.5, "val_miou": 0.61}, step=1)
    assert [(m.key, m.value, m.step) for m in store.metrics(run.id, "loss")] == [
        ("loss", 1.5, 0),
        ("loss", 0.5, 1),
    ]
    assert store.latest_metrics(run.id) == {"loss": 0.5, "val_miou": 0.61}
    store.add_metrics(run.id, {"zeta": 1.0}, step=2)
    store.add_metrics(run.id, {"loss": 0.25}, step=3)
    latest = store.latest_metrics(run.id)  # keys in the order of their last append, on both back-ends
    assert list(latest.items()) == [("val_miou", 0.61), ("zeta", 1.0), ("loss", 0.25)]
    assert store.latest_metrics_many([run.id], ["loss", "zeta"]) == {run.id: {"zeta": 1.0, "loss": 0.25}}


def test_artifacts_and_artifact_path(store: Store, tmp_path: Path) -> None:
    run = store.create_run(kind="train", config={})
    with pytest.raises(CheckpointError, match="has no checkpoint artifact"):
        store.artifact_path(run.id)
    ckpt = _file(tmp_path / "model.pt", b"weights")
    art = store.add_artifact(run.id, kind="checkpoint", path=ckpt)
    store.add_artifact(run.id, kind="report", path=_file(tmp_path / "r.json", b"{}"))
    assert (art.path, art.bytes, len(art.sha256)) == (ckpt.resolve(), 7, 64)
    assert [a.kind for a in store.artifacts(run.id)] == ["checkpoint", "report"]
    assert store.artifacts(run.id, kind="report")[0].path.name == "r.json"
    assert store.artifact_path(run.id[:-2]) == ckpt.resolve()  # a prefix resolves too
    ckpt.unlink()
    with pytest.raises(CheckpointError, match="is gone"):
        store.artifact_path(run.id)


# -- --skip-existing ---------------------------------------------------------------------------


def test_find_completed_honours_sha256(store: Store, tmp_path: Path) -> None:
    ckpt = _file(tmp_path / "a.pt", b"aaaa")
    run_id = _completed_with_checkpoint(store, ckpt, {"x": 1})
    key = config_key({"x": 1})
    assert store.find_completed(config_key=key).id == run_id
    assert store.find_completed(config_key=key, kind="prune") is None
    assert store.find_completed(config_key="0" * 64) is None
    ckpt.write_bytes(b"aaab")  # same size, different content
    assert store.find_completed(config_key=key) is None
    ckpt.write_bytes(b"aaaa")
    assert store.find_completed(config_key=key).id == run_id
    ckpt.unlink()
    assert store.find_completed(config_key=key) is None


def test_find_completed_ignores_unfinished_runs_and_falls_back(store: Store, tmp_path: Path) -> None:
    good = _completed_with_checkpoint(store, _file(tmp_path / "good.pt", b"g"), {"x": 2})
    broken = _file(tmp_path / "broken.pt", b"b")
    _completed_with_checkpoint(store, broken, {"x": 2})
    store.create_run(kind="train", config={"x": 2})  # running: never counts
    broken.unlink()
    assert store.find_completed(config_key=config_key({"x": 2})).id == good


# -- claims ------------------------------------------------------------------------------------


def test_claim_run_is_check_and_set(store: Store) -> None:
    cell = store.create_run(kind="cell", config={"c": 1}, status="pending")
    assert store.claim_run(cell.id, worker="a:1", stale_after_s=60) is True
    assert store.claim_run(cell.id, worker="b:2", stale_after_s=60) is False
    got = store.get_run(cell.id)
    assert (got.status, got.worker, got.attempt) == ("running", "a:1", 1)
    assert store.claim_run("0" * 20, worker="a:1", stale_after_s=60) is False


def test_stale_running_and_interrupted_runs_are_reclaimable(store: Store) -> None:
    cell = store.create_run(kind="cell", config={"c": 2})
    assert store.claim_run(cell.id, worker="b:2", stale_after_s=60) is False  # fresh heartbeat
    old = datetime.now(timezone.utc) - timedelta(minutes=5)
    with store.engine.begin() as conn:
        conn.execute(update(RUN).where(RUN.c.id == cell.id).values(heartbeat_at=old))
    assert store.claim_run(cell.id, worker="b:2", stale_after_s=60) is True
    assert (store.get_run(cell.id).worker, store.get_run(cell.id).attempt) == ("b:2", 2)
    store.set_status(cell.id, "interrupted")
    assert store.claim_run(cell.id, worker="c:3", stale_after_s=60) is True
    got = store.get_run(cell.id)
    assert (got.status, got.attempt, got.finished_at) == ("running", 3, None)
    for final in ("completed", "failed"):
        store.set_status(cell.id, final)
        assert store.claim_run(cell.id, worker="d:4", stale_after_s=0) is False


def test_finish_claimed_is_compare_and_set(store: Store) -> None:
    """A worker that lost its cell to another (judged dead, reclaimed) writes nothing when it ends."""
    cell = store.create_run(kind="cell", config={"c": 3}, status="pending")
    assert store.claim_run(cell.id, worker="a:1", stale_after_s=60)
    old = datetime.now(timezone.utc) - timedelta(minutes=5)
    with store.engine.begin() as conn:
        conn.execute(update(RUN).where(RUN.c.id == cell.id).values(heartbeat_at=old))
    assert store.claim_run(cell.id, worker="b:2", stale_after_s=60)  # a:1 looked dead: b:2 has attempt 2
    assert not store.finish_claimed(cell.id, "completed", attempt=1, worker="a:1", metrics={"miou": 0.1})
    assert not store.finish_claimed(cell.id, "failed", attempt=2, worker="a:1", error="boom")  # not a's
    got = store.get_run(cell.id)
    assert (got.status, got.worker, got.attempt, got.error) == ("running", "b:2", 2, None)
    assert store.latest_metrics(cell.id) == {}
    assert store.finish_claimed(cell.id, "completed", attempt=2, worker="b:2", metrics={"miou": 0.2})
    assert not store.finish_claimed(cell.id, "completed", attempt=2, worker="b:2")  # completed once
    got = store.get_run(cell.id)
    assert (got.status, got.finished_at is not None) == ("completed", True)
    assert store.latest_metrics(cell.id) == {"miou": 0.2}
    with pytest.raises(ValueError, match="terminal"):
        store.finish_claimed(cell.id, "running", attempt=2)


# -- several processes -------------------------------------------------------------------------


def _writer(db: str, tag: str, n: int, barrier) -> None:
    barrier.wait()
    store = Store(db)  # both processes open (and migrate) the blank database at once
    for i in range(n):
        run = store.create_run(kind="cell", config={"tag": tag, "i": i})
        store.add_metrics(run.id, {"miou": i / n, "loss": 1.0}, step=i)
        store.set_status(run.id, "completed")
    store.close()


def test_two_processes_write_at_once_and_lose_nothing(store_url: str) -> None:
    db, n = store_url, 200
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(db, tag, n, barrier)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    with Store(db) as store:
        runs = store.list_runs()
        assert len(runs) == 2 * n and all(r.status == "completed" for r in runs)
        assert {(r.config["tag"], r.config["i"]) for r in runs} == {(t, i) for t in "ab" for i in range(n)}
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM metric").scalar() == 4 * n
            assert conn.exec_driver_sql("SELECT count(*) FROM migrations").scalar() == len(MIGRATIONS)
