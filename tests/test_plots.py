"""Plots: the honest Pareto panel (x relative to the baseline, from the paired measurement), training
curves of train / finetune / bench runs, and `--tensorboard` event files read back."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.report import aggregate, baseline_point, cell_rows
from vss_cli.report.plots import bench_figure, pareto_points
from vss_cli.store import Store

runner = CliRunner()
METHODS, RATIOS, SEEDS = ["fpgm", "l1"], [0.3, 0.5], [0, 1]


def _speedup(method: str, ratio: float, seed: int) -> float:
    return 1.0 + ratio + 0.2 * seed + (0.1 if method == "l1" else 0.0)


@pytest.fixture
def bench(tmp_path) -> tuple[Path, str]:
    """A bench of 2 × 2 × 2 cells whose absolute latencies disagree with their paired speedups (a busy
    machine), each with a 3-epoch fine-tune run."""
    db = tmp_path / "vss.db"
    with Store(db) as store:
        grid = {"methods": METHODS, "ratios": RATIOS, "seeds": SEEDS}
        bench = store.create_run(kind="bench", config={"grid": grid}, status="completed", name="demo")
        for method in METHODS:
            for ratio in RATIOS:
                for seed in SEEDS:
                    cell = store.create_run(kind="cell", status="completed", parents=[(bench.id, "cell-of")],
                                            config={"method": method, "ratio": ratio, "seed": seed})
                    store.add_metrics(cell.id, {
                        "miou": 0.7 - ratio / 4 + seed / 100, "miou_retention": 1 - ratio / 3,
                        "speedup_latency": _speedup(method, ratio, seed), "macs_reduction": ratio * 0.9,
                        "params_reduction": ratio * 0.8, "baseline_miou": 0.7, "baseline_latency_ms": 320.0,
                        "candidate_latency_ms": 660.0 - 100 * seed})  # measured minutes apart: noise
                    tune = store.create_run(kind="finetune", config={}, status="completed",
                                            parents=[(cell.id, "step-of")])
                    for epoch in range(3):
                        store.add_metrics(tune.id, {"train_loss": 1 / (epoch + 1), "lr": 0.01 * (3 - epoch),
                                                    "val_miou": 0.5 + epoch / 10 - ratio / 5}, step=epoch)
    return db, bench.id


def _x_of_cells(store: Store, bench_id: str, x: str = "latency") -> dict[tuple, tuple[float, float]]:
    return {(p.method, p.ratio): (p.x, p.x_std) for p in pareto_points(cell_rows(store, bench_id), x)}


def test_pareto_x_is_one_over_the_paired_speedup_and_ignores_absolute_latency(bench):
    import statistics

    db, bench_id = bench
    with Store(db) as store:
        before = _x_of_cells(store, bench_id)
        for method in METHODS:
            for ratio in RATIOS:
                xs = [1 / _speedup(method, ratio, s) for s in SEEDS]
                assert before[(method, ratio)] == (pytest.approx(statistics.fmean(xs)),
                                                   pytest.approx(statistics.stdev(xs)))
        for cell in store.list_runs(kind="cell"):
            m = store.latest_metrics(cell.id)
            store.add_metrics(cell.id, {"baseline_latency_ms": 2 * m["baseline_latency_ms"],
                                        "candidate_latency_ms": 2 * m["candidate_latency_ms"]})
        assert _x_of_cells(store, bench_id) == before
        rows = cell_rows(store, bench_id)
        fig = bench_figure(aggregate(rows), rows, baseline_point(store, store.get_run(bench_id), rows), title="t")
        pareto = fig.axes[1]
        drawn = {tuple(sorted(round(v, 9) for v in line.get_xdata())) for line in pareto.lines}
        for method in METHODS:
            assert tuple(sorted(round(before[(method, r)][0], 9) for r in RATIOS)) in drawn
        star = [c for c in pareto.collections if c.get_label() == "baseline (unpruned)"]
        assert [tuple(c.get_offsets()[0]) for c in star] == [(1.0, pytest.approx(0.7))]  # the baseline at x = 1
        macs = _x_of_cells(store, bench_id, "macs")
        assert macs[("l1", 0.5)][0] == pytest.approx(1 - 0.45)


def test_report_plot_x_options_and_bench_curves(bench, tmp_path):
    db, bench_id = bench
    for x in ("latency", "macs", "params"):
        out = tmp_path / f"{x}.png"
        result = runner.invoke(app, ["--db", str(db), "report", bench_id, "--plot", str(out), "--x", x])
        assert result.exit_code == 0, result.output
        with Image.open(out) as image:
            assert image.size == (1200, 500)
    assert runner.invoke(app, ["--db", str(db), "report", bench_id, "--x", "flops"]).exit_code == 2
    curves = tmp_path / "curves.png"
    result = runner.invoke(app, ["--db", str(db), "report", bench_id, "--curves", str(curves)])
    assert result.exit_code == 0, result.output
    with Image.open(curves) as image:
        assert image.size == (1200, 800)  # 2 methods: 12 inches wide minimum, 2 rows of 4 inches


def _read_events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_and_finetune_curves_and_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    db, board = tmp_path / "vss.db", tmp_path / "tb"
    tiny = ["--epochs", "2", "--max-iters-per-epoch", "2", "--input-size", "32,32", "--batch-size", "8",
            "--device", "cpu", "--tensorboard", str(board)]
    trained = runner.invoke(app, ["--db", str(db), "--threads", "1", "train", "--width", "0.125", *tiny])
    assert trained.exit_code == 0, trained.output
    with Store(db) as store:
        train_run = store.list_runs(kind="train")[0]
    tuned = runner.invoke(app, ["--db", str(db), "--threads", "1", "finetune", "--model-from", train_run.id, *tiny])
    assert tuned.exit_code == 0, tuned.output
    with Store(db) as store:
        tune_run = store.list_runs(kind="finetune")[0]
        for run in (train_run, tune_run):
            events = _read_events(board / f"{run.kind}-{run.id}")
            for key in ("train_loss", "val_miou", "lr"):
                stored = [(m.step, m.value) for m in store.metrics(run.id, key)]
                assert [s for s, _ in events[key]] == [s for s, _ in stored] == [0, 1]
                assert [v for _, v in events[key]] == pytest.approx([v for _, v in stored], rel=1e-6)
    for run in (train_run, tune_run):
        out = tmp_path / f"{run.kind}.png"
        result = runner.invoke(app, ["--db", str(db), "report", run.id, "--plot", str(out), "--format", "csv"])
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[0].startswith("epoch,train_loss,val_miou,lr")
        assert len(result.stdout.splitlines()) == 3
        with Image.open(out) as image:
            assert image.size == (1200, 400)
    assert runner.invoke(app, ["--db", str(db), "report", train_run.id, "--per-class"]).exit_code == 2


def test_tensorboard_without_the_package_exits_2_before_any_run(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    db = tmp_path / "vss.db"
    result = runner.invoke(app, ["--db", str(db), "train", "--epochs", "1", "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 2 and "tensorboard" in result.output
    with Store(db) as store:
        assert store.list_runs() == []


def test_new_report_modules_import_no_torch():
    import subprocess
    import sys

    code = ("import sys, vss_cli.report.per_class, vss_cli.report.curves, vss_cli.report.panels, "
            "vss_cli.report.plots; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
