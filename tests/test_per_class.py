"""`vss report --per-class`: per-class IoU of the baseline and each method × ratio from the cells' eval
reports, the drop, worst classes first; the heat-map panel of `--plot`."""

from __future__ import annotations

import copy
import csv
import io
import json
import statistics
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.data import get_spec
from vss_cli.engine.checkpoint import ModelSpec, save_checkpoint
from vss_cli.engine.complexity import count_complexity
from vss_cli.fileio import write_json
from vss_cli.models import build_model, get_model_info
from vss_cli.pruning.registry import get_method
from vss_cli.report.per_class import class_damage, heat_map
from vss_cli.report.tables import CellRow
from vss_cli.store import Store
from vss_cli.workflows.evaluate import EvalOptions, eval_run
from vss_cli.workflows.prune import PruneOptions, prune_model

SIZE = (32, 32)
METHODS, RATIOS, SEEDS = ["l1", "fpgm"], [0.3], [0, 1]
runner = CliRunner()


def _checkpoints(root: Path) -> dict[str, Path]:
    spec, kw = get_spec("synthetic"), get_model_info("unet").tiny_kwargs
    torch.manual_seed(0)
    model = build_model("unet", spec.num_classes, **kw).eval()
    mspec = ModelSpec("unet", spec.num_classes, kw)
    out = {"base": save_checkpoint(root / "base.pt", model=model, spec=mspec, dataset=spec.to_dict())}
    for method in METHODS:
        pruned = copy.deepcopy(model)
        _, history = prune_model(
            pruned, "unet", get_method(method), PruneOptions(ckpt="", samples=0, global_ratio=0.3), input_size=SIZE,
            device="cpu", batch_source=None, fit=None, num_classes=spec.num_classes, ignore_index=spec.ignore_index,
            count=lambda m: count_complexity(m, SIZE),
        )
        out[method] = save_checkpoint(root / f"{method}.pt", model=pruned, spec=mspec, history=history,
                                      dataset=spec.to_dict())
    return out


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, str]:
    """A bench whose cells' eval steps are real `eval` runs of a tiny U-Net against pruned copies."""
    tmp_path = tmp_path_factory.mktemp("per_class")
    db = tmp_path / "vss.db"
    ckpts = _checkpoints(tmp_path)
    with Store(db) as store:
        grid = {"methods": METHODS, "ratios": RATIOS, "seeds": SEEDS}
        bench = store.create_run(kind="bench", config={"kind": "bench", "grid": grid, "baseline": {}},
                                 status="completed")
        for method in METHODS:
            for seed in SEEDS:
                cell = store.create_run(kind="cell", status="completed", parents=[(bench.id, "cell-of")],
                                        config={"method": method, "ratio": 0.3, "seed": seed})
                opts = EvalOptions(baseline=str(ckpts["base"]), candidate=str(ckpts[method]), input_size=SIZE,
                                   speed_iters=1, warmup=0, reconstruction_batches=0, batch_size=16, device="cpu",
                                   out_dir=str(tmp_path / f"eval_{method}_{seed}"))
                outcome = eval_run(opts, store)
                store.add_edge(cell.id, outcome.run_id, "step-of")
                store.add_metrics(cell.id, {"miou": outcome.metrics["candidate_miou"]})
    return db, bench.id


def test_per_class_csv_rows_and_baseline_ious_match_the_eval_report(bench):
    db, bench_id = bench
    result = runner.invoke(app, ["--db", str(db), "report", bench_id, "--per-class", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    names = get_spec("synthetic").class_names
    assert len(rows) == len(METHODS) * len(RATIOS) * len(names)
    assert {(r["method"], float(r["ratio"]), r["class_name"]) for r in rows} == {
        (m, r, c) for m in METHODS for r in RATIOS for c in names}
    with Store(db) as store:
        (eval_first, *_) = sorted(store.list_runs(kind="eval"), key=lambda r: r.id)
        report = json.loads(Path(store.artifacts(eval_first.id, "report")[0].path).read_text())
        candidates = {m: [] for m in METHODS}
        for run in store.list_runs(kind="eval"):
            rep = json.loads(Path(store.artifacts(run.id, "report")[0].path).read_text())
            method = Path(rep["candidate"]).stem
            candidates[method].append(rep["candidate_results"]["per_class_iou"])
    baseline = report["baseline_results"]["per_class_iou"]
    for row in rows:
        expected = baseline[row["class_name"]]
        assert (row["baseline_iou"] == "") if expected is None else float(row["baseline_iou"]) == pytest.approx(expected)
        values = [c[row["class_name"]] for c in candidates[row["method"]] if c[row["class_name"]] is not None]
        if values and expected is not None:
            assert float(row["iou_mean"]) == pytest.approx(statistics.fmean(values))
            assert float(row["drop"]) == pytest.approx(expected - statistics.fmean(values))
    for method in METHODS:  # worst classes first within each method × ratio
        drops = [float(r["drop"]) for r in rows if r["method"] == method and r["drop"] != ""]
        assert drops == sorted(drops, reverse=True)


def test_per_class_json_table_and_heat_map_plot(bench, tmp_path):
    db, bench_id = bench
    as_json = runner.invoke(app, ["--db", str(db), "report", bench_id, "--per-class", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    assert {"method", "ratio", "class_name", "baseline_iou", "iou_mean", "iou_std", "drop", "n"} <= set(
        json.loads(as_json.stdout)[0])
    out = tmp_path / "per_class.png"
    table = runner.invoke(app, ["--db", str(db), "report", bench_id, "--per-class", "--plot", str(out), "--x", "macs"])
    assert table.exit_code == 0, table.output
    assert "drop" in table.stdout
    with Image.open(out) as image:
        assert image.size == (1200, 1000)


def _report(base: dict, cand: dict) -> dict:
    return {"baseline_results": {"per_class_iou": base}, "candidate_results": {"per_class_iou": cand}}


def test_means_skip_undefined_classes_and_the_heat_map_orders_worst_first(tmp_path):
    with Store(tmp_path / "vss.db") as store:
        rows = []
        for seed, cand in enumerate(({"a": 0.5, "b": 0.8, "c": None}, {"a": 0.3, "b": 0.6, "c": 0.2})):
            run = store.create_run(kind="eval", config={"seed": seed}, status="completed")
            store.add_artifact(run.id, kind="report", path=write_json(
                tmp_path / f"r{seed}.json", _report({"a": 0.9, "b": 0.7, "c": 0.4}, cand)))
            rows.append(CellRow(method="m", ratio=0.5, seed=seed, status="completed", eval_run=run.id))
        damage = class_damage(store, rows)
    assert [d.class_name for d in damage] == ["a", "c", "b"]  # drops 0.5, 0.2, 0.0
    a, c, b = damage
    assert (a.iou_mean, a.drop, a.n) == (pytest.approx(0.4), pytest.approx(0.5), 2)
    assert a.iou_std == pytest.approx(statistics.stdev([0.5, 0.3]))
    assert (c.iou_mean, c.iou_std, c.n) == (pytest.approx(0.2), None, 1)
    assert b.drop == pytest.approx(0.0)
    heat = heat_map(damage)
    assert heat.rows == ["m 0.5"] and heat.classes == ["a", "c", "b"]


def test_per_class_without_eval_reports_exits_2(tmp_path):
    with Store(tmp_path / "vss.db") as store:
        bench = store.create_run(kind="bench", config={"grid": {}}, status="completed")
        store.create_run(kind="cell", status="completed", parents=[(bench.id, "cell-of")],
                         config={"method": "l1", "ratio": 0.3, "seed": 0})
    result = runner.invoke(app, ["report", bench.id, "--per-class"])
    assert result.exit_code == 2 and "eval report" in result.output


def test_the_heat_map_grows_with_the_number_of_rows():
    from vss_cli.report.plots import HEAT_HEIGHT, heat_height

    assert heat_height(2) == heat_height(11) == HEAT_HEIGHT
    assert heat_height(56) > 3 * HEAT_HEIGHT
