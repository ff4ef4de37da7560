"""`vss report` on a bench recorded straight into a store: aggregation over seeds, the four formats,
the plot, bench resolution, and that `vss_cli.report` never imports torch."""

from __future__ import annotations

import csv
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.store import Store

runner = CliRunner()
METHODS, RATIOS, SEEDS = ["fpgm", "l1"], [0.3, 0.5], [0, 1]
SHA = "a" * 64


def _cell_metrics(method: str, ratio: float, seed: int) -> dict[str, float]:
    """Deterministic, distinct numbers per cell so means and stds are checkable."""
    miou = 0.7 - ratio * 0.2 - (0.05 if method == "l1" else 0.0) + seed * 0.01
    return {"miou": miou, "miou_retention": miou / 0.7, "speedup_latency": 1 + ratio + seed * 0.1,
            "channel_reduction": ratio, "macs_reduction": ratio * 1.5, "params_reduction": ratio * 1.2,
            "baseline_miou": 0.7, "baseline_latency_ms": 20.0, "candidate_latency_ms": 20.0 / (1 + ratio)}


@pytest.fixture
def bench_db(tmp_path, monkeypatch) -> tuple[Path, str]:
    """A completed 2 methods × 2 ratios × 2 seeds bench with one extra failed cell (l1, 0.5, seed 2)."""
    db = tmp_path / "vss.db"
    monkeypatch.setenv("VSS_DB", str(db))
    monkeypatch.chdir(tmp_path)
    with Store(db) as store:
        base = store.create_run(kind="train", config={"model": "unet"}, status="completed")
        ckpt = tmp_path / "base.pt"
        ckpt.write_bytes(b"weights")
        store.add_artifact(base.id, kind="checkpoint", path=ckpt)
        sha = store.artifacts(base.id)[0].sha256
        grid = {"methods": METHODS, "ratios": RATIOS, "seeds": SEEDS + [2]}
        bench = store.create_run(kind="bench", config={"kind": "bench", "grid": grid, "baseline": {}},
                                 status="completed", name="fpgm,l1 r0.3,0.5 s0,1")
        store.add_edge(base.id, bench.id, "baseline-of")
        for method in METHODS:
            for ratio in RATIOS:
                for seed in SEEDS:
                    cell = store.create_run(kind="cell", status="completed", parents=[(bench.id, "cell-of")],
                                            config={"method": method, "ratio": ratio, "seed": seed,
                                                    "baseline_sha256": sha})
                    store.add_metrics(cell.id, _cell_metrics(method, ratio, seed))
        failed = store.create_run(kind="cell", status="running", parents=[(bench.id, "cell-of")],
                                  config={"method": "l1", "ratio": 0.5, "seed": 2, "baseline_sha256": sha})
        store.set_status(failed.id, "failed", error="RuntimeError: planted")
        # a cell of an older baseline of the same bench: not part of the report
        store.create_run(kind="cell", status="completed", parents=[(bench.id, "cell-of")],
                         config={"method": "l1", "ratio": 0.3, "seed": 0, "baseline_sha256": SHA})
    return db, bench.id


def test_csv_has_one_row_per_method_and_ratio_with_seed_statistics(bench_db):
    _, bench_id = bench_db
    result = runner.invoke(app, ["report", bench_id, "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["method"], float(r["ratio"])) for r in rows] == [(m, r) for m in METHODS for r in RATIOS]
    for row in rows:
        values = [_cell_metrics(row["method"], float(row["ratio"]), s)["miou"] for s in SEEDS]
        assert int(row["n"]) == 2
        assert float(row["miou_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(row["miou_std"]) == pytest.approx(statistics.stdev(values))
        for key in ("miou_retention_mean", "macs_reduction_mean", "params_reduction_mean", "speedup_latency_mean"):
            assert row[key] != ""
    assert {(r["method"], r["ratio"]): int(r["failed"]) for r in rows}[("l1", "0.5")] == 1


def test_json_round_trips_and_latest_is_the_newest_bench(bench_db):
    _, bench_id = bench_db
    by_id = runner.invoke(app, ["report", bench_id, "--format", "json"])
    latest = runner.invoke(app, ["report", "--format", "json"])
    assert by_id.exit_code == 0 and latest.exit_code == 0, by_id.output + latest.output
    rows = json.loads(by_id.stdout)
    assert rows == json.loads(latest.stdout)
    assert json.loads(json.dumps(rows)) == rows
    assert len(rows) == len(METHODS) * len(RATIOS)
    assert {"method", "ratio", "n", "miou_mean", "miou_std", "speedup_latency_mean"} <= set(rows[0])


def test_markdown_and_table_show_mean_plus_minus_std(bench_db):
    _, bench_id = bench_db
    md = runner.invoke(app, ["report", bench_id, "--format", "markdown"])
    assert md.exit_code == 0, md.output
    lines = md.stdout.strip().splitlines()
    assert lines[0].startswith("| method | ratio | n | mIoU |")
    assert len(lines) == 2 + len(METHODS) * len(RATIOS)
    assert "±" in lines[2]
    table = runner.invoke(app, ["report", bench_id])
    assert table.exit_code == 0 and "fpgm" in table.stdout


def test_plot_writes_a_png_of_the_expected_size(bench_db, tmp_path):
    from PIL import Image

    _, bench_id = bench_db
    out = tmp_path / "plots" / "bench.png"
    result = runner.invoke(app, ["report", bench_id, "--format", "csv", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (1200, 500)
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temporary file left behind


def test_bad_references_exit_2(bench_db, tmp_path):
    db, _ = bench_db
    with Store(db) as store:
        train_id = store.list_runs(kind="train")[0].id
    assert runner.invoke(app, ["report", train_id]).exit_code == 2
    assert runner.invoke(app, ["report", "zzzz"]).exit_code == 2
    assert runner.invoke(app, ["report", "latest", "--format", "yaml"]).exit_code == 2
    empty = runner.invoke(app, ["--db", str(tmp_path / "empty.db"), "report"])
    assert empty.exit_code == 2 and "vss bench" in empty.output


def test_report_package_imports_no_torch():
    code = "import sys, vss_cli.report, vss_cli.report.plots; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ---------------------------------------------------------------------------------------------
# one report definition: eval JSON keys, flat metrics, cell rows, the CSV header


def _tiny_ckpt(tmp_path: Path) -> Path:
    import torch

    from vss_cli.data import get_spec
    from vss_cli.engine.checkpoint import ModelSpec, save_checkpoint
    from vss_cli.models import build_model

    spec = get_spec("synthetic")
    torch.manual_seed(0)
    model = build_model("unet", spec.num_classes, width=0.125).eval()
    return save_checkpoint(tmp_path / "base.pt", model=model, spec=ModelSpec("unet", spec.num_classes, {"width": 0.125}),
                           dataset=spec.to_dict())


def test_eval_json_keys_come_from_the_report_dataclass(tmp_path, monkeypatch):
    import dataclasses

    from vss_cli.report import schema

    ckpt = _tiny_ckpt(tmp_path)
    report_path = tmp_path / "r.json"
    args = ["eval", "--baseline", str(ckpt), "--candidate", str(ckpt), "--input-size", "32,48", "--speed-iters", "2",
            "--warmup", "1", "--batch-size", "8", "--report", str(report_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(report_path.read_text())
    typed = schema.EvalReport.from_json(data)
    spread = set(typed.speedups)
    assert spread >= {"speedup_latency", "speedup_fps"}
    assert list(data) == [k for f in dataclasses.fields(schema.EvalReport)
                          for k in (typed.speedups if f.name in schema.SPREAD_FIELDS else [f.name])]
    assert typed.to_json() == data
    flat = typed.flat_metrics()
    assert {f"{side}_{name}" for side in schema.SIDES for name in schema.FLAT_SIDE_METRICS} <= set(flat)
    eval_sources = {m.source for m in schema.CELL_METRICS if m.step == "eval"}
    assert eval_sources - {"speedup_noisy"} <= set(flat), "a cell metric has no source"
    with Store(tmp_path / "vss.db") as store:
        run = store.list_runs(kind="eval")[0]
        assert store.latest_metrics(run.id) == pytest.approx(flat, nan_ok=True)


def test_csv_header_and_summary_keys_follow_the_cell_metric_list(bench_db, monkeypatch):
    from vss_cli.report import schema
    from vss_cli.report.tables import aggregate_columns

    _, bench_id = bench_db
    header = next(csv.reader(io.StringIO(runner.invoke(app, ["report", bench_id, "--format", "csv"]).stdout)))
    assert header == aggregate_columns()
    assert [c for c in header if c.endswith("_mean")] == [f"{m.name}_mean" for m in schema.CELL_METRICS if m.label]
    extra = schema.CellMetric("baseline_miou", "baseline_miou", "base mIoU", ".3f")  # now a report column too
    monkeypatch.setattr(schema, "CELL_METRICS", (*[m for m in schema.CELL_METRICS if m.name != "baseline_miou"], extra))
    result = runner.invoke(app, ["report", bench_id, "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert "baseline_miou_mean" in rows[0] and float(rows[0]["baseline_miou_mean"]) == pytest.approx(0.7)
    table = runner.invoke(app, ["report", bench_id, "--format", "markdown"])
    assert "base mIoU" in table.stdout.splitlines()[0]
    assert "baseline_miou" in schema.CellRow("l1", 0.3, 0, "completed", metrics={"baseline_miou": 0.7}).to_dict()


def _report(noisy: bool | None = None):
    from vss_cli.report.schema import EvalReport, PruningRatios

    speed = {"median_ms": 10.0, "min_ms": 9.0, "max_ms": 12.0, "fps": 100.0, "batch": 1, "dtype": "fp32"}
    if noisy is not None:
        speed = {**speed, "noisy": noisy}
    res = {"mIoU": 0.5, "Pixel_Accuracy": 0.8, "Mean_Accuracy": 0.6, "Frequency_Weighted_IoU": 0.7}
    cx = {"FLOPs": "1 GMac", "Params": "1 M", "macs": 10, "params": 5}
    return EvalReport(baseline="b", candidate="c", dataset="synthetic", split="val", input_size=[32, 32],
                      baseline_results=res, candidate_results=res, miou_retention=1.0, pixel_accuracy_retention=1.0,
                      baseline_speed=speed, candidate_speed=speed, speedups={"speedup_latency": 1.04, "speedup_fps": 1.04},
                      baseline_flops_params=cx, candidate_flops_params=cx,
                      pruning_ratios=PruningRatios(channel_prune_ratio=0.299, channels_before=1472, channels_after=1032))


def _rendered(table) -> str:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_eval_table_channel_row_shows_channels_removed_and_noise():
    from vss_cli.cli.eval import summary_table

    text = _rendered(summary_table(_report()))
    removed = next(line for line in text.splitlines() if "channels removed" in line)
    assert "440 (29.9%)" in removed and "1032" not in removed and "1472" not in removed
    kept = next(line for line in text.splitlines() if "prunable channels" in line)
    assert "1472" in kept and "1032" in kept
    assert "noisy" not in text
    assert "noisy" in _rendered(summary_table(_report(noisy=True)))
    assert _report().flat_metrics().get("speedup_noisy") is None, "no noise verdict must not read as 'not noisy'"
    assert _report(noisy=True).flat_metrics()["speedup_noisy"] == 1.0
    assert _report(noisy=False).flat_metrics()["speedup_noisy"] == 0.0


def test_report_tables_mark_a_noisy_speedup():
    from vss_cli.report.schema import CellRow
    from vss_cli.report.tables import aggregate, display_rows

    rows = [CellRow("l1", 0.3, s, "completed", metrics={"speedup_latency": 1.1, "speedup_noisy": float(s == 1)})
            for s in (0, 1)]
    shown = display_rows(aggregate(rows))
    assert shown[0]["speedup"] == "1.10 ± 0.00" and shown[0]["timing"] == "noisy"
    quiet = display_rows(aggregate([CellRow("l1", 0.3, 0, "completed", metrics={"speedup_latency": 1.1})]))
    assert "timing" not in quiet[0]


def test_a_row_never_claims_a_speedup_and_slower_than_parent():
    """Eval's paired timing says x1.24 while prune's paired check said no faster: `disputed`, not both."""
    from vss_cli.report.schema import CellRow
    from vss_cli.report.tables import aggregate, display_rows, speed_mark

    faster = CellRow("l1", 0.3, 0, "completed", metrics={"speedup_latency": 1.24, "slower_than_parent": 1.0})
    slower = CellRow("l2", 0.3, 0, "completed", metrics={"speedup_latency": 0.97, "slower_than_parent": 1.0})
    shown = {r["method"]: r for r in display_rows(aggregate([faster, slower]))}
    assert shown["l1"]["timing"] == "disputed" and shown["l2"]["timing"] == "slower than parent"
    assert "slower" not in speed_mark(1.24, True, True) and "noisy" in speed_mark(1.24, True, True)


def test_report_tables_show_no_absolute_latency():
    """Absolute medians measured minutes apart under changing load are not a column; the paired speedup is."""
    from vss_cli.report.schema import CellRow
    from vss_cli.report.tables import aggregate, aggregate_columns, display_rows

    row = CellRow("l1", 0.3, 0, "completed", metrics={"speedup_latency": 1.2, "candidate_latency_ms": 94.5})
    shown = display_rows(aggregate([row]))[0]
    assert not any("ms" in k.replace("_", " ").split() for k in (*shown, *aggregate_columns()))
    assert shown["speedup"] == "1.20"
