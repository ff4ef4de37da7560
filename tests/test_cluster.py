"""A grid across workers (issue 14): `vss bench --join` workers on PostgreSQL, one SIGKILLed while it
holds a cell, the cell reclaimed and completed once; a worker without the shared artifact folder fails
with one line and writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.data import get_spec
from vss_cli.engine.checkpoint import ModelSpec, save_checkpoint
from vss_cli.models import build_model
from vss_cli.store import Store
from vss_cli.store.identity import WorkerRef

REPO = Path(__file__).resolve().parents[1]
GRID = ["--methods", "l1,random", "--ratios", "0.2,0.3,0.5", "--seeds", "0", "--input-size", "32,48",
        "--batch-size", "8", "--samples", "0", "--speed-iters", "1", "--warmup", "0", "--finetune-epochs", "0",
        "--reconstruction-batches", "0"]
runner = CliRunner()

@pytest.fixture
def pg_db(pg_url) -> str:
    """The test's PostgreSQL database: a fresh schema (conftest's `pg_url`)."""
    return pg_url


def _ckpt(path: Path) -> Path:
    spec = get_spec("synthetic")
    torch.manual_seed(0)
    model = build_model("unet", spec.num_classes, width=0.125).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, model=model, spec=ModelSpec("unet", spec.num_classes, {"width": 0.125}),
                           dataset=spec.to_dict())


def _env(db: str) -> dict[str, str]:
    return {**os.environ, "VSS_DB": db, "VSS_QUIET": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _vss(args: list[str], db: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vss_cli", *args], env=_env(db), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run(args: list[str], db: str, cwd: Path, timeout: float = 300) -> tuple[int, str]:
    proc = _vss(args, db, cwd)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _holding(db: str, pid: int):
    """A running cell the process `pid` holds with at least one step run started, if any."""
    with Store(db) as store:
        for cell in store.list_runs(kind="cell", status="running"):
            if WorkerRef.parse(cell.worker).pid == pid and any(rel == "step-of" for rel, _ in store.children(cell.id)):
                return cell
    return None


def test_three_join_workers_one_killed_complete_every_cell_once(tmp_path, pg_db):
    base = _ckpt(tmp_path / "shared" / "base.pt")
    out = tmp_path / "shared" / "grid"
    prepared = runner.invoke(app, ["--db", pg_db, "bench", "--baseline", str(base), *GRID, "--out-dir", str(out),
                                   "--prepare-only"])
    assert prepared.exit_code == 0 and "--join" in prepared.output, prepared.output
    join = ["bench", "--join", "latest", "--worker-grace", "5"]
    victim, deadline, cut = _vss(join, pg_db, tmp_path), time.monotonic() + 240, None
    workers = [victim]
    while cut is None and victim.poll() is None and time.monotonic() < deadline:
        cut = _holding(pg_db, victim.pid)
        if len(workers) == 1 and cut is None:
            with Store(pg_db) as store:  # the others start once the first is at work, so it surely gets a cell
                if store.list_runs(kind="cell", status="running"):
                    workers += [_vss(join, pg_db, tmp_path) for _ in range(2)]
        time.sleep(0.05)
    assert cut is not None, "the first worker never held a cell with a step started"
    workers += [_vss(join, pg_db, tmp_path) for _ in range(3 - len(workers))]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    outputs = [w.communicate(timeout=300)[0] for w in workers[1:]]
    assert all(w.returncode == 0 for w in workers[1:]), outputs
    with Store(pg_db) as store:
        cells = store.list_runs(kind="cell")
        assert len(cells) == 6 and {c.status for c in cells} == {"completed"}, outputs
        for cell in cells:
            steps = [run for rel, run in store.children(cell.id) if rel == "step-of"]
            done = sorted(r.kind for r in steps if r.status == "completed")
            assert done.count("eval") == 1 and done.count("prune") == 1, (cell.name, done)
            assert all(r.is_terminal for r in steps), "a step of the killed worker was left running"
        again = store.get_run(cut.id)
        assert again.attempt == 2 and WorkerRef.parse(again.worker).pid != victim.pid
        assert store.latest_metrics(cut.id)["lost_attempt"] == 1
        assert sorted(c.attempt for c in cells) == [1, 1, 1, 1, 1, 2]
    code, shown = _run(["runs", "show", cut.id, "--format", "json"], pg_db, tmp_path)
    assert code == 0 and json.loads(shown)["run"]["attempt"] == 2 and "interrupted" in shown
    summary = json.loads((out / "benchmark_summary.json").read_text())
    stats = summary["summary_stats"]
    assert (stats["total_experiments"], stats["completed"], stats["failed"]) == (6, 6, 0)
    code, text = _run(join, pg_db, tmp_path)
    assert code == 0 and "nothing to claim" in text, text


def _snapshot(db: Path) -> list[tuple]:
    with Store(db) as store:
        return [(r.id, r.status, r.attempt, r.heartbeat_at, r.out_dir) for r in store.list_runs()]


def test_join_without_the_artifact_folder_fails_with_one_line_and_writes_nothing(tmp_path):
    db = str(tmp_path / "vss.db")
    base = _ckpt(tmp_path / "shared" / "base.pt")
    prepared = runner.invoke(app, ["--db", db, "bench", "--baseline", str(base), *GRID, "--out-dir",
                                   str(tmp_path / "shared" / "grid"), "--prepare-only"])
    assert prepared.exit_code == 0, prepared.output
    shutil.move(tmp_path / "shared", tmp_path / "elsewhere")  # this "machine" does not see the shared folder
    before, files = _snapshot(Path(db)), sorted(tmp_path.rglob("*"))
    code, text = _run(["bench", "--join", "latest"], db, tmp_path)
    assert code == 2, text
    mixed = runner.invoke(app, ["--db", db, "bench", "--join", "latest", "--ratios", "0.9"])
    assert mixed.exit_code == 2 and "--ratios" in mixed.output, mixed.output
    lines = text.strip().splitlines()
    assert len(lines) == 1 and str(base) in lines[0] and "shared" in lines[0], text
    assert _snapshot(Path(db)) == before
    assert sorted(p for p in tmp_path.rglob("*") if not p.name.startswith("vss.db")) == \
        [p for p in files if not p.name.startswith("vss.db")]


def test_nproc_per_cell_fine_tunes_each_cell_once_under_torchrun(tmp_path):
    db = str(tmp_path / "vss.db")
    base = _ckpt(tmp_path / "base.pt")
    grid = [a if a not in ("l1,random", "0.2,0.3,0.5") else {"l1,random": "l1", "0.2,0.3,0.5": "0.3,0.5"}[a]
            for a in GRID]
    grid[grid.index("--finetune-epochs") + 1] = "1"
    result = runner.invoke(app, ["--db", db, "bench", "--baseline", str(base), *grid, "--max-iters-per-epoch", "1",
                                 "--nproc-per-cell", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with Store(db) as store:
        cells = store.list_runs(kind="cell")
        assert len(cells) == 2 and {c.status for c in cells} == {"completed"}
        for cell in cells:
            tunes = [r for rel, r in store.children(cell.id) if rel == "step-of" and r.kind == "finetune"]
            assert len(tunes) == 1 and tunes[0].status == "completed" and tunes[0].config["world_size"] == 2
            assert cell.config["finetune"]["nproc_per_cell"] == 2
        assert len(store.list_runs(kind="finetune")) == 2
