"""The store at research scale, on SQLite and PostgreSQL: constant statement counts for listing and
lineage, a run and its metrics in one transaction, batch reads, removal and garbage collection."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import event, insert, select, text, update
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.errors import ConfigError
from vss_cli.store import Store, new_run_id
from vss_cli.store.queries import EDGE, METRIC, RUN, RunFilter

runner = CliRunner()


@pytest.fixture
def store(store_url: str) -> Store:
    with Store(store_url) as s:
        yield s


@contextmanager
def counted(engine):
    """Count the SQL statements `engine` sends while the block runs."""
    statements: list[str] = []

    def hook(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", hook)


def bulk_runs(store: Store, n: int) -> list[str]:
    """n completed train -> prune pairs (edges, two metrics each), inserted in one transaction."""
    now = datetime.now(timezone.utc)
    runs, edges, metrics = [], [], []
    for i in range(n):
        for kind in ("train", "prune"):
            run_id = new_run_id()
            runs.append(dict(id=run_id, kind=kind, status="completed", name=f"r{i}", config=json.dumps({"i": i}),
                             config_key=f"k{i}", created_at=now, started_at=now, finished_at=now,
                             heartbeat_at=now, attempt=1))
            metrics += [dict(run_id=run_id, key=k, value=i / n, step=None, created_at=now) for k in ("miou", "loss")]
        edges.append(dict(parent_id=runs[-2]["id"], child_id=runs[-1]["id"], relation="pruned-from", created_at=now))
    with store.engine.begin() as conn:
        conn.execute(insert(RUN), runs)
        conn.execute(insert(EDGE), edges)
        conn.execute(insert(METRIC), metrics)
    return [r["id"] for r in runs]


def _list_statements(url: str, fmt: str) -> tuple[int, str]:
    from sqlalchemy.engine import Engine

    with counted(Engine) as statements:
        result = runner.invoke(app, ["--db", url, "runs", "list", "--limit", "100000", "--format", fmt])
    assert result.exit_code == 0, result.output
    return len(statements), result.stdout


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_runs_list_sends_the_same_statements_for_10_and_1000_runs(store_url: str, fmt: str) -> None:
    counts = {}
    with Store(store_url) as store:
        for n in (5, 500):  # 10 and 1000 runs
            bulk_runs(store, n - (len(store.run_ids()) // 2))
            counts[n], out = _list_statements(store_url, fmt)
            if fmt == "json":
                rows = json.loads(out)
                assert len(rows) == 2 * n and all(r["miou"] is not None for r in rows)
                assert sum(bool(r["parents"]) for r in rows) == n
    assert counts[5] == counts[500] <= 12


def grid(store: Store, cells: int) -> str:
    """A bench of `cells` cells (method x ratio), each with a prune, finetune and eval step; its id."""
    sha = "a" * 64
    methods, ratios = [f"m{i}" for i in range(cells // 2)], [0.3, 0.5]
    bench = store.create_run(kind="bench", status="completed", config={
        "baseline": {"checkpoint_sha256": sha}, "grid": {"methods": methods, "ratios": ratios, "seeds": [0]}})
    for method in methods:
        for ratio in ratios:
            cell = store.create_run(kind="cell", status="completed", parents=[(bench.id, "cell-of")],
                                    config={"method": method, "ratio": ratio, "seed": 0, "baseline_sha256": sha},
                                    metrics={"miou": ratio, "speedup": 1 / ratio})
            for kind in ("prune", "finetune", "eval"):
                store.create_run(kind=kind, status="completed", config={"c": cell.id},
                                 parents=[(cell.id, "step-of")])
    return bench.id


def test_report_rows_are_a_fixed_number_of_statements(store: Store) -> None:
    from vss_cli.report.tables import cell_rows

    counts = {}
    for cells in (4, 40):
        bench = grid(store, cells)
        with counted(store.engine) as statements:
            rows = cell_rows(store, bench)
        counts[cells] = len(statements)
        assert len(rows) == cells and all(r.eval_run and r.prune_run and r.finetune_run for r in rows)
        assert {(r.method, r.ratio, r.metrics["miou"]) for r in rows} >= {("m1", 0.5, 0.5), ("m0", 0.3, 0.3)}
    assert counts[4] == counts[40] <= 12


def test_lineage_and_batch_reads_are_one_statement_per_level(store: Store) -> None:
    ids = bulk_runs(store, 200)
    train, prune = ids[0], ids[1]
    with counted(store.engine) as statements:
        many = store.latest_metrics_many(ids)
        parents = store.parents_many(ids)
        children = store.children_many(ids)
        arts = store.artifacts_many(ids)
    assert len(many) == 400 and many[prune] == {"miou": 0.0, "loss": 0.0}
    assert [(rel, r.id) for rel, r in parents[prune]] == [("pruned-from", train)] and children[prune] == []
    assert arts[train] == []
    assert sum(s.lstrip().upper().startswith("SELECT") for s in statements) == 4
    with counted(store.engine) as statements:
        lineage = store.lineage(prune)
    assert [n.run.id for n in lineage.ancestors] == [train]
    assert sum(s.lstrip().upper().startswith("SELECT") for s in statements) <= 1 + 2 * 2


def test_a_run_and_its_metrics_are_one_transaction(store: Store) -> None:
    parent = store.create_run(kind="train", config={})
    metrics = {f"m{i}": i / 10 for i in range(20)} | {"bad": float("nan")}
    with counted(store.engine) as statements:
        run = store.create_run(kind="eval", config={"x": 1}, parents=[(parent.id, "evaluates")],
                               metrics=metrics, step=3)
    writes = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(writes) == 3  # run, edges, metrics: one multi-row INSERT each
    assert store.latest_metrics(run.id) == {f"m{i}": i / 10 for i in range(20)}
    assert {m.step for m in store.metrics(run.id)} == {3}
    assert [(rel, p.id) for rel, p in store.parents(run.id)] == [("evaluates", parent.id)]


def test_a_failed_metric_insert_leaves_no_run(store: Store) -> None:
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):  # a NULL metric key: the run's INSERT is rolled back with it
        store.create_run(kind="eval", config={}, metrics={None: 1.0})
    assert store.list_runs() == []


def test_overview_filters(store: Store) -> None:
    train = store.create_run(kind="train", config={"model": "unet", "dataset": "synthetic", "opt": {"lr": 0.01}})
    prune = store.create_run(kind="prune", config={"method": "l1", "ratio": 0.5, "seed": 0, "amp": True},
                             parents=[(train.id, "pruned-from")])
    other = store.create_run(kind="prune", config={"method": "fpgm", "ratio": 0.3, "seed": "0"})
    bench = store.create_run(kind="bench", config={})
    cell = store.create_run(kind="cell", config={}, parents=[(bench.id, "cell-of")])
    step = store.create_run(kind="eval", config={}, parents=[(cell.id, "step-of")])

    def ids(**kw) -> list[str]:
        return [o.run.id for o in store.overview(RunFilter(**kw))]

    assert ids(where=(("method", "l1"),)) == [prune.id]
    assert ids(where=(("ratio", "0.50"),)) == [prune.id]  # numbers compare as numbers
    assert ids(where=(("seed", "0"),)) == [other.id, prune.id]  # "0" and 0 both match
    assert ids(where=(("amp", "true"),)) == [prune.id]
    assert ids(where=(("opt.lr", "0.01"), ("model", "unet"))) == [train.id]
    assert ids(parent=train.id) == [prune.id]
    assert ids(bench=bench.id) == [step.id, cell.id, bench.id]
    assert ids(kind="prune", limit=1) == [other.id]
    assert ids(since=datetime.now(timezone.utc) + timedelta(minutes=1)) == []
    with store.engine.begin() as conn:
        old = datetime.now(timezone.utc) - timedelta(hours=1)
        conn.execute(update(RUN).where(RUN.c.id == train.id).values(heartbeat_at=old))
    assert ids(status="stale") == [train.id]
    assert train.id not in ids(status="running")
    assert store.get_run(train.id).display_status() == "stale"
    with pytest.raises(ConfigError, match="unknown run status"):
        store.overview(RunFilter(status="zombie"))


def _artifact(store: Store, run_id: str, path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    store.add_artifact(run_id, kind="checkpoint", path=path)
    return path


def _dangling(store: Store) -> int:
    sql = ("SELECT (SELECT count(*) FROM edge WHERE parent_id NOT IN (SELECT id FROM run) OR child_id NOT IN "
           "(SELECT id FROM run)) + (SELECT count(*) FROM metric WHERE run_id NOT IN (SELECT id FROM run)) + "
           "(SELECT count(*) FROM artifact WHERE run_id NOT IN (SELECT id FROM run))")
    with store.engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def test_remove_with_children_keeps_shared_files(store: Store, tmp_path: Path) -> None:
    train = store.create_run(kind="train", config={}, metrics={"miou": 0.5})
    prune = store.create_run(kind="prune", config={}, parents=[(train.id, "pruned-from")])
    keeper = store.create_run(kind="eval", config={})
    for run in (train, prune):
        store.set_status(run.id, "completed")  # rm refuses a running run
    shared = _artifact(store, train.id, tmp_path / "shared.pt", b"s" * 10)
    store.add_artifact(keeper.id, kind="checkpoint", path=shared)
    own = _artifact(store, prune.id, tmp_path / "own.pt", b"o" * 7)
    with pytest.raises(ConfigError, match="--with-children"):
        store.plan_removal([train.id])
    plan = store.plan_removal([train.id[:-1]], with_children=True)
    assert sorted(plan.run_ids) == sorted([train.id, prune.id]) and plan.shared == (shared.resolve(),)
    done = store.remove(plan)
    assert (done.files_removed, done.bytes_freed) == (1, 7)
    assert shared.is_file() and not own.exists()
    assert [r.id for r in store.list_runs()] == [keeper.id]
    assert _dangling(store) == 0 and store.artifacts(keeper.id)[0].path == shared.resolve()


def test_remove_a_child_drops_the_edge_to_its_parent(store: Store) -> None:
    train = store.create_run(kind="train", config={})
    prune = store.create_run(kind="prune", config={}, parents=[(train.id, "pruned-from")], status="failed")
    store.remove(store.plan_removal([prune.id]))
    assert store.children(train.id) == [] and _dangling(store) == 0


def _age(store: Store, run_id: str, days: float) -> None:
    with store.engine.begin() as conn:
        when = datetime.now(timezone.utc) - timedelta(days=days)
        conn.execute(update(RUN).where(RUN.c.id == run_id).values(created_at=when, started_at=when, finished_at=when,
                                                                   heartbeat_at=when))


def test_gc_drops_old_failed_runs_and_reports_missing_artifact_rows(store: Store, tmp_path: Path) -> None:
    """gc takes a failed run with its subtree only when the whole subtree is old and failed/interrupted;
    a completed step keeps its failed cell; artifact rows whose files are gone are reported and kept
    (dropped only with forget_missing)."""
    old_failed = store.create_run(kind="train", config={"a": 1}, status="failed")
    recent_failed = store.create_run(kind="train", config={"a": 2}, status="failed")
    cell = store.create_run(kind="cell", config={}, status="failed")
    step = store.create_run(kind="prune", config={}, parents=[(cell.id, "step-of")], status="completed")
    failed_step = store.create_run(kind="finetune", config={}, parents=[(cell.id, "step-of")], status="failed")
    parent = store.create_run(kind="train", config={"a": 3}, status="interrupted")
    live_child = store.create_run(kind="prune", config={}, parents=[(parent.id, "pruned-from")], status="completed")
    bench = store.create_run(kind="bench", config={}, status="interrupted")
    good = store.create_run(kind="train", config={"a": 4}, status="completed")
    ckpt = _artifact(store, step.id, tmp_path / "step.pt", b"x" * 100)
    tune = _artifact(store, failed_step.id, tmp_path / "tune.pt", b"t" * 60)
    gone = _artifact(store, good.id, tmp_path / "gone.pt", b"y")
    gone.unlink()
    for run_id in (old_failed.id, cell.id, step.id, failed_step.id, parent.id, bench.id, good.id):
        _age(store, run_id, 10)
    plan = store.plan_gc(older_than_s=7 * 86400)
    assert sorted(plan.run_ids) == sorted([old_failed.id, failed_step.id])
    assert sorted(r.id for r, _ in plan.kept) == sorted([cell.id, parent.id])
    assert [a.path for a in plan.missing] == [gone.resolve()]
    done = store.remove(plan)
    assert (done.bytes_freed, done.forgotten) == (60, 0) and ckpt.exists() and not tune.exists()
    assert len(store.artifacts(good.id)) == 1  # kept: the file may only be unmounted here
    left = {r.id for r in store.list_runs()}
    assert left == {recent_failed.id, cell.id, step.id, parent.id, live_child.id, bench.id, good.id}
    assert _dangling(store) == 0
    done = store.remove(store.plan_gc(older_than_s=7 * 86400), forget_missing=True)
    assert done.forgotten == 1 and store.artifacts(good.id) == []
    with store.engine.connect() as conn:
        assert sorted(conn.execute(select(EDGE.c.child_id)).scalars().all()) == sorted([live_child.id, step.id])
