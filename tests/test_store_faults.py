"""Issue 22, a store that survives its server: corrupt, read-only, newer-schema and unreachable
databases, bad URLs, a held SQLite lock, and a PostgreSQL server restarted or stopped under a run."""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.errors import StoreError, StoreUnavailable
from vss_cli.store import Store
from vss_cli.store.migrations import MIGRATIONS
from vss_cli.store.tables import MIGRATIONS as MIGRATIONS_TABLE

runner = CliRunner()
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def _vss(*args: str, db, cwd, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "VSS_DB": str(db), "VSS_QUIET": "1", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "vss_cli", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=300)


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_a_corrupt_database_is_one_line_naming_the_file(tmp_path):
    db = tmp_path / "broken.db"
    db.write_bytes(b"this is not sqlite at all " * 100)
    done = _vss("runs", "list", db=db, cwd=tmp_path)
    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert str(db) in line and "not a vss database or is damaged" in line and "--db" in line


def test_a_read_only_database_lists_and_refuses_writes(tmp_path, monkeypatch):
    """A database folder this user cannot write: reads work, writes are one line naming the file."""
    db = tmp_path / "ro" / "vss.db"
    with Store(db) as store:
        run = store.create_run(kind="train", config={}, status="failed")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if str(path).startswith(str(db.parent)) and
                        mode == os.W_OK else real_access(path, mode, **kw))
    store = Store(db)
    assert [r.id for r in store.list_runs()] == [run.id]
    with pytest.raises(StoreError, match=f"cannot write: {db} is read-only for this user"):
        store.create_run(kind="train", config={})
    listed = runner.invoke(app, ["--db", str(db), "runs", "list", "--format", "json"])
    assert listed.exit_code == 0 and run.id in listed.stdout
    refused = runner.invoke(app, ["--db", str(db), "runs", "rm", run.id, "--yes"])
    assert refused.exit_code == 2 and f"{db} is read-only" in _one_line(refused.stderr)


def test_a_newer_schema_is_read_but_never_written(store_url):
    with Store(store_url) as store:
        run = store.create_run(kind="train", config={})
        with store.engine.begin() as conn:
            conn.execute(insert(MIGRATIONS_TABLE).values(name="m999_from_the_future", applied_at=run.created_at))
    store = Store(store_url)
    assert store.get_run(run.id).id == run.id
    ours = f"{len(MIGRATIONS)} ({MIGRATIONS[-1].__name__})"
    with pytest.raises(StoreError, match=rf"schema version {len(MIGRATIONS) + 1} \(m999_from_the_future\), newer "
                                         rf"than this vss's {ours.replace('(', '[(]').replace(')', '[)]')}"):
        store.set_status(run.id, "completed")
    assert store.get_run(run.id).status == "running"


@pytest.mark.parametrize(("url", "names"), [
    ("postgresql+psycopg://vss:s3cret@127.0.0.1:1/vss", "127.0.0.1:1/vss"),  # nothing listens on port 1
    ("postgresql+psycopg://vss:s3cret@127.0.0.1:notaport/vss", "postgresql+psycopg://vss:***@127.0.0.1:notaport/vss"),
    ("nosuchdb://vss:s3cret@host/vss", "nosuchdb://vss:***@host/vss"),
    ("postgresql+nosuchdriver://vss:s3cret@host/vss", "postgresql+nosuchdriver://vss:***@host/vss"),
])
def test_bad_or_unreachable_database_urls_are_one_line_without_the_password(url, names, tmp_path):
    done = runner.invoke(app, ["--db", url, "runs", "list"])
    assert done.exit_code == 2, done.output
    line = _one_line(done.stderr)
    assert names in line and "s3cret" not in line and "Traceback" not in done.output


def test_a_held_sqlite_lock_is_reported_within_seconds_naming_the_file(tmp_path):
    """Another process holds the write lock: the writer says so after the busy timeout (5 s), retries
    for VSS_DB_RETRY_S, then exits 2 naming the file, and the run it wrote is left untouched."""
    db = tmp_path / "locked.db"
    with Store(db) as store:
        run = store.create_run(kind="train", config={}, status="failed")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        done = _vss("runs", "rm", run.id, "--yes", db=db, cwd=tmp_path, VSS_DB_RETRY_S="8")
        took = time.monotonic() - t0
    finally:
        holder.rollback()
        holder.close()
    assert done.returncode == 2, done.stderr
    assert f"vss: database {db} is locked by another process" in done.stderr
    assert f"error: database {db} stayed locked for" in done.stderr and took < 30
    assert Store(db).get_run(run.id).status == "failed"


# -- a PostgreSQL server of the test's own, restarted and stopped ---------------------------------------


def _as_postgres(*cmd: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


@pytest.fixture
def own_pg():
    """A throw-away PostgreSQL server (`.ci/pg.sh`): (url, `pg_ctl(action)`, which stops, starts or
    restarts it and waits)."""
    if not (PG_BIN / "pg_ctl").exists() or (os.geteuid() == 0 and not shutil.which("runuser")):
        pytest.skip(f"no PostgreSQL server binaries in {PG_BIN}")
    script = Path(__file__).resolve().parents[1] / ".ci" / "pg.sh"
    out = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, check=True, timeout=120).stdout
    values = dict(part.split("=", 1) for part in out.replace("export ", "").split())
    try:
        folder = values["VSS_PG_DIR"]

        def pg_ctl(action: str) -> None:
            extra: tuple[str, ...] = ("-m", "fast") if action != "start" else ()
            if action != "stop":  # the options pg.sh started it with (port, socket folder), as it recorded them
                options = shlex.split(Path(f"{folder}/data/postmaster.opts").read_text())[1:]
                kept = [o for i, o in enumerate(options) if o != "-D" and (i == 0 or options[i - 1] != "-D")]
                extra += ("-l", f"{folder}/log", "-o", shlex.join(kept))
            subprocess.run(_as_postgres(str(PG_BIN / "pg_ctl"), "-D", f"{folder}/data", action, "-w", *extra),
                           check=True, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

        yield values["VSS_TEST_PG_URL"], pg_ctl
    finally:
        subprocess.run(["bash", str(script), "stop", values["VSS_PG_DIR"]], timeout=120)


def test_a_store_rides_out_a_postgres_restart_and_gives_up_on_a_long_stop(own_pg, capfd, monkeypatch):
    url, pg_ctl = own_pg
    monkeypatch.setenv("VSS_DB_RETRY_S", "30")
    store = Store(url)
    run = store.create_run(kind="train", config={})
    pg_ctl("stop")
    starter = threading.Timer(3.0, pg_ctl, ("start",))
    starter.start()
    try:
        store.add_metrics(run.id, {"train_loss": 1.0}, step=0)  # waits for the server, then writes once
    finally:
        starter.join()
    err = capfd.readouterr().err
    assert "is unreachable" in err and "retrying for up to 30 s" in err and "is back after" in err
    assert [m.value for m in store.metrics(run.id, "train_loss")] == [1.0]

    pg_ctl("restart")
    store.heartbeat(run.id)  # the pooled connection died with the server: a new one, no error

    store.retry.budget_s = 2.0
    pg_ctl("stop")
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"database 127\.0\.0\.1:\d+/vss_test stayed unreachable for"):
        store.heartbeat(run.id)
    assert time.monotonic() - t0 < 20


def test_a_training_run_survives_a_postgres_restart_mid_run(own_pg, tmp_path):
    """`vss train` on PostgreSQL, the server restarted after the first epoch: the run completes, each
    epoch recorded once (it used to die within seconds, its row left running)."""
    url, pg_ctl = own_pg
    env = {**os.environ, "VSS_DB": url, "VSS_QUIET": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "vss_cli", "train", "--epochs", "3", "--width", "0.125", "--input-size", "32,48",
            "--batch-size", "8", "--max-iters-per-epoch", "15", "--device", "cpu"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("runs/train/*/last.pt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    pg_ctl("restart")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    store = Store(url)
    (run,) = store.list_runs(kind="train")
    assert run.status == "completed"
    assert sorted(m.step for m in store.metrics(run.id, "train_loss")) == [0, 1, 2]
