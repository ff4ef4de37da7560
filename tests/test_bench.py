"""`vss bench`: a grid killed with SIGKILL continues where it stopped, two processes share one grid,
a failing cell does not stop the others, bad input writes nothing, and the summary file merges."""

from __future__ import annotations

import json
import os
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
from vss_cli.pruning import base as pruning_base
from vss_cli.pruning.base import PruningMethod
from vss_cli.pruning.method_options import Scores
from vss_cli.store import Store

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
# a tiny grid: 2 methods × 2 ratios × 1 seed on 32×48 synthetic images; short timing runs
TINY = ["--methods", "l1,random", "--ratios", "0.3,0.5", "--input-size", "32,48", "--batch-size", "16",
        "--samples", "8", "--speed-iters", "2", "--warmup", "1", "--max-iters-per-epoch", "1"]
TINY_BASELINE = ["--model", "unet", "--width", "0.125", "--baseline-epochs", "1"]


@pytest.fixture(scope="module")
def baseline_ckpt(tmp_path_factory) -> Path:
    """An untrained tiny U-Net checkpoint on the synthetic dataset (pruning does not need a trained one)."""
    spec, kwargs = get_spec("synthetic"), {"width": 0.125}
    torch.manual_seed(0)
    model = build_model("unet", spec.num_classes, **kwargs).eval()
    path = tmp_path_factory.mktemp("baseline") / "base.pt"
    return save_checkpoint(path, model=model, spec=ModelSpec("unet", spec.num_classes, kwargs), dataset=spec.to_dict())


def _env(db: Path) -> dict[str, str]:
    return {**os.environ, "VSS_DB": str(db), "VSS_QUIET": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _vss(args: list[str], db: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vss_cli", *args], env=_env(db), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def _cells(store: Store) -> list:
    return store.list_runs(kind="cell")


def _steps(store: Store, cell_id: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for relation, run in store.children(cell_id):
        if relation == "step-of":
            found.setdefault(run.kind, []).append(run.id)
    return found


def test_a_grid_killed_mid_cell_continues_with_skip_existing(tmp_path, baseline_ckpt):
    db, out = tmp_path / "vss.db", tmp_path / "grid"
    args = ["bench", "--baseline", str(baseline_ckpt), *TINY, "--finetune-epochs", "1", "--out-dir", str(out)]
    proc = _vss(args, db, tmp_path)
    deadline = time.monotonic() + 180
    first = cut = None
    while cut is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        if not db.exists():
            continue
        with Store(db) as store:  # kill once a cell is done and the next one has finished pruning
            done = store.list_runs(kind="cell", status="completed")
            running = store.list_runs(kind="cell", status="running")
            if done and running and "prune" in _steps(store, running[0].id):
                prune = store.get_run(_steps(store, running[0].id)["prune"][0])
                if prune.status == "completed":
                    first, cut = done[-1], running[0]
                    first_steps, cut_prune = _steps(store, first.id), prune.id
    assert cut is not None, proc.communicate()[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    _finish(_vss([*args, "--skip-existing"], db, tmp_path))
    with Store(db) as store:
        cells = _cells(store)
        assert len(cells) == 4 and {c.status for c in cells} == {"completed"}
        again = store.get_run(first.id)
        assert again.attempt == first.attempt == 1 and again.finished_at == first.finished_at
        assert _steps(store, first.id) == first_steps
        resumed = store.get_run(cut.id)
        assert resumed.attempt == 2 and _steps(store, cut.id)["prune"] == [cut_prune], "finished steps were redone"
        for cell in cells:
            steps = [store.get_run(i) for ids in _steps(store, cell.id).values() for i in ids]
            assert all(r.is_terminal for r in steps), "a step of a lost worker was left running"
            assert sorted(r.kind for r in steps if r.status == "completed") == ["eval", "finetune", "prune"]
        assert len(store.list_runs(kind="bench")) == 1
    summary = json.loads((out / "benchmark_summary.json").read_text())
    stats = summary["summary_stats"]
    assert stats["total_experiments"] == 4 and stats["completed"] == 4 and stats["failed"] == 0
    assert stats["skipped"] >= 1 and stats["success_rate"] == 1.0
    row = next(r for r in summary["results"] if r["cell_run"] == first.id)
    assert row["skipped"] and row["prune_run"] == first_steps["prune"][0]


def test_two_processes_share_one_grid_and_train_the_baseline_once(tmp_path):
    db = tmp_path / "vss.db"
    args = ["bench", *TINY, *TINY_BASELINE, "--finetune-epochs", "0"]
    procs = [_vss(args, db, tmp_path) for _ in range(2)]
    outputs = [_finish(p) for p in procs]
    with Store(db) as store:
        assert len(store.list_runs(kind="train")) == 1, outputs
        assert len(store.list_runs(kind="bench")) == 1
        cells = _cells(store)
        assert len(cells) == 4
        for cell in cells:
            assert cell.status == "completed" and cell.attempt == 1, (cell, outputs)
            assert {kind: len(ids) for kind, ids in _steps(store, cell.id).items()} == {"prune": 1, "eval": 1}
        assert len(store.list_runs(kind="prune")) == len(store.list_runs(kind="eval")) == 4
        bench = store.list_runs(kind="bench")[0]
        assert bench.status == "completed"
    summary = json.loads((Path(bench.out_dir) / "benchmark_summary.json").read_text())
    assert summary["summary_stats"]["completed"] == 4


class _PlantedFailure(PruningMethod):
    """Scores like random, except that it fails at ratio 0.5: one bad cell in the grid."""

    name = "planted_failure"

    def score(self, ctx):
        if ctx.ratio == 0.5:
            raise RuntimeError("planted failure")
        return Scores({g.name: torch.rand(g.size) for g in ctx.groups})


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch, baseline_ckpt):
    monkeypatch.setitem(pruning_base.METHODS, "planted_failure", _PlantedFailure)
    monkeypatch.setenv("VSS_DB", str(tmp_path / "vss.db"))
    monkeypatch.setenv("VSS_QUIET", "1")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "grid"
    tiny = [a if a != "l1,random" else "l1,planted_failure" for a in TINY]
    args = ["bench", "--baseline", str(baseline_ckpt), *tiny, "--finetune-epochs", "0", "--out-dir", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    summary = json.loads((out / "benchmark_summary.json").read_text())
    stats = summary["summary_stats"]
    assert stats["failed"] == 1 and stats["completed"] == 3 and stats["total_experiments"] == 4
    mine = summary["results"]
    assert [(r["method"], r["ratio"], r["status"]) for r in mine] == [
        ("l1", 0.3, "completed"), ("l1", 0.5, "completed"), ("planted_failure", 0.3, "completed"),
        ("planted_failure", 0.5, "failed")]
    assert all("planted failure" in r["error"] for r in mine if r["status"] == "failed")

    report = runner.invoke(app, ["report", "--format", "json"])
    assert report.exit_code == 0, report.output
    rows = json.loads(report.stdout)
    assert [(r["method"], r["ratio"], r["n"]) for r in rows] == [
        ("l1", 0.3, 1), ("l1", 0.5, 1), ("planted_failure", 0.3, 1), ("planted_failure", 0.5, 0)]


@pytest.mark.parametrize("bad", [
    ["--ratios", "1.5"], ["--ratios", "0.3,-0.2"], ["--methods", "nope"], ["--methods", ","], ["--seeds", ""],
    ["--finetune-epochs", "-1"], ["--ratios", "abc"],
])
def test_bad_input_exits_2_before_any_row(tmp_path, monkeypatch, bad):
    db = tmp_path / "vss.db"
    monkeypatch.setenv("VSS_DB", str(db))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["bench", *bad])
    assert result.exit_code == 2, result.output
    if db.exists():
        with Store(db) as store:
            assert store.list_runs() == []
    assert not (tmp_path / "runs" / "bench").exists()


def test_create_run_once_gives_racing_processes_one_row(tmp_path):
    """Eight processes create the same cell under the same bench at once: one row, one edge."""
    db = tmp_path / "vss.db"
    with Store(db) as store:
        bench = store.create_run(kind="bench", config={}, status="pending")
    code = ("import sys; from vss_cli.store import Store; s = Store(sys.argv[1]); "
            "run, created = s.create_run_once(kind='cell', config={'m': 1}, config_key='k', "
            "parents=[(sys.argv[2], 'cell-of')]); print(run.id, created)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), bench.id], env=_env(db), stdout=subprocess.PIPE,
                              text=True) for _ in range(8)]
    answers = [p.communicate(timeout=120)[0].split() for p in procs]
    assert len({run_id for run_id, _ in answers}) == 1
    assert [created for _, created in answers].count("True") == 1
    with Store(db) as store:
        assert len(store.list_runs(kind="cell")) == 1 and len(store.children(bench.id)) == 1
        other = store.create_run(kind="bench", config={}, status="pending")
        _, created = store.create_run_once(kind="cell", config={"m": 1}, config_key="k", parents=[(other.id, "cell-of")])
        assert created, "the same key under another bench is another cell"


def test_claim_run_retakes_a_seen_run_only_once(tmp_path):
    with Store(tmp_path / "vss.db") as store:
        run = store.create_run(kind="cell", config={}, status="pending")
        assert store.claim_run(run.id, stale_after_s=300)
        store.set_status(run.id, "failed", error="boom")
        seen = store.get_run(run.id)
        assert not store.claim_run(run.id, stale_after_s=300)  # failed runs are not claimable by default
        assert store.claim_run(run.id, stale_after_s=300, also=("failed",), if_attempt=seen.attempt)
        store.set_status(run.id, "failed", error="boom again")
        assert not store.claim_run(run.id, stale_after_s=300, also=("failed",), if_attempt=seen.attempt)
        assert store.get_run(run.id).attempt == 2
        with pytest.raises(ValueError):
            store.claim_run(run.id, stale_after_s=300, also=("failed",))


ONE = ["--input-size", "32,48", "--batch-size", "16", "--samples", "8", "--speed-iters", "2", "--warmup", "1",
       "--finetune-epochs", "0", "--seeds", "0"]


def _configs(store: Store, kind: str) -> dict[str, dict]:
    return {r.config["method"]: r.config for r in store.list_runs(kind=kind) if "method" in r.config}


def test_method_and_eval_options_reach_every_cell(tmp_path, baseline_ckpt):
    args = ["bench", "--baseline", str(baseline_ckpt), "--methods", "l1,fgp", "--ratios", "0.3", *ONE,
            "--option", "fgp:share=0.8", "--oracle-layers", "2", "--channels-last", "--reconstruction-batches", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with Store(tmp_path / "vss.db") as store:
        prunes = _configs(store, "prune")
        assert prunes["fgp"]["method_options"] == {"share": 0.8} and prunes["l1"]["method_options"] == {}
        cells = {c.config["method"]: c.config for c in store.list_runs(kind="cell")}
        assert cells["fgp"]["prune"]["method_options"] == {"share": 0.8}
        evals = store.list_runs(kind="eval")
        assert len(evals) == 2 and all(e.config["oracle_layers"] == 2 and e.config["channels_last"] for e in evals)
        assert all(e.config["reconstruction_batches"] == 1 for e in evals)
    bad = runner.invoke(app, [*args[:-7], "--option", "dmcp:target_macs=1"])
    assert bad.exit_code == 2 and "dmcp" in bad.output


def test_out_dir_of_another_grid_is_refused_unless_force_new(tmp_path, baseline_ckpt):
    out = tmp_path / "X"
    grid_a = ["bench", "--baseline", str(baseline_ckpt), "--methods", "l1", "--ratios", "0.3", *ONE, "--out-dir", str(out)]
    assert runner.invoke(app, grid_a).exit_code == 0
    summary = out / "benchmark_summary.json"
    before = summary.read_bytes()
    with Store(tmp_path / "vss.db") as store:
        runs_before = len(store.list_runs())
    grid_b = [a if a != "0.3" else "0.5" for a in grid_a]
    refused = runner.invoke(app, grid_b)
    assert refused.exit_code == 2 and "--force-new" in refused.output
    assert summary.read_bytes() == before
    with Store(tmp_path / "vss.db") as store:
        assert len(store.list_runs()) == runs_before, "a refused grid wrote rows"
    assert runner.invoke(app, grid_a).exit_code == 0, "the same grid continues in its own folder"
    before = summary.read_bytes()
    forced = runner.invoke(app, [*grid_b, "--force-new"])
    assert forced.exit_code == 0, forced.output
    a_id = json.loads(before)["bench_run"]
    assert (out / f"benchmark_summary.{a_id}.json").read_bytes() == before
    now = json.loads(summary.read_text())
    assert now["bench_run"] != a_id and [r["ratio"] for r in now["results"]] == [0.5]


def test_bench_says_why_it_trains_a_new_baseline(tmp_path, monkeypatch):
    from vss_cli.workflows import bench_baseline

    lines: list[str] = []
    monkeypatch.setattr(bench_baseline, "log", lambda msg, *a, **k: lines.append(msg))
    base = ["bench", "--methods", "l1", "--ratios", "0.3", *ONE, *TINY_BASELINE]
    assert runner.invoke(app, [*base, "--max-iters-per-epoch", "1"]).exit_code == 0
    assert any("training one" in line for line in lines), lines
    lines.clear()
    assert runner.invoke(app, [*base, "--max-iters-per-epoch", "1", "--ratios", "0.5"]).exit_code == 0
    assert any("reusing completed train run" in line for line in lines), lines
    lines.clear()
    assert runner.invoke(app, [*base, "--max-iters-per-epoch", "2"]).exit_code == 0
    said = next(line for line in lines if "training a new one" in line)
    assert "max_iters_per_epoch 1 -> 2" in said


def test_predict_panels_and_tensorboard_per_cell_and_slimming_within_the_training_budget(tmp_path, baseline_ckpt):
    args = ["bench", "--baseline", str(baseline_ckpt), "--methods", "slimming,l1", "--ratios", "0.3", *ONE,
            "--finetune-epochs", "1", "--predict", "2", "--tensorboard", str(tmp_path / "tb")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with Store(tmp_path / "vss.db") as store:
        cells = {c.config["method"]: c for c in store.list_runs(kind="cell")}
        assert all(c.status == "completed" for c in cells.values())
        slim, l1 = (store.latest_metrics(cells[m].id) for m in ("slimming", "l1"))
        assert slim["extra_epochs"] == 1 and slim["finetune_epochs"] == 0  # its sparse phase was the cell's epoch
        assert l1["extra_epochs"] == 0 and l1["finetune_epochs"] == 1
        assert len(store.list_runs(kind="finetune")) == 1
        predicts = store.list_runs(kind="predict")
        assert len(predicts) == 2 and all(len(store.artifacts(p.id, "panel")) == 2 for p in predicts)
        assert all("step-of" in [rel for rel, _ in store.parents(p.id)] for p in predicts)
    assert len(list((tmp_path / "tb").glob("finetune-*"))) == 1
