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
