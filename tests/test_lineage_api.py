"""`vss_cli.lineage`, the Python API for analysis, on a small recorded grid (SQLite and PostgreSQL): its
queries against what was recorded, the same rows as `vss report` / `vss runs list`, and every code block of
docs/analysis.md run in order."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vss_cli import lineage
from vss_cli.cli.app import app
from vss_cli.report.schema import CELL_METRICS
from vss_cli.report.tables import cell_rows
from vss_cli.store import Store

DOC = Path(__file__).resolve().parents[1] / "docs" / "analysis.md"
METHODS, RATIOS, SEEDS, EPOCHS = ["l1", "fpgm"], [0.3, 0.5], [0, 1], 3
runner = CliRunner()


@dataclass
class Recorded:
    """What the grid recorded, kept independently of the store to check the queries against."""

    url: str
    bench: str
    baseline: str
    cells: dict[tuple[str, float, int], str] = field(default_factory=dict)
    steps: dict[str, dict[str, str]] = field(default_factory=dict)  # cell id -> {kind: run id}
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # finetune id -> val_miou


def _cell_metrics(method: str, ratio: float, seed: int) -> dict[str, float]:
    miou = 0.7 - ratio * 0.2 - (0.05 if method == "l1" else 0.0) + seed * 0.01
    base = {"miou": miou, "miou_retention": miou / 0.7, "macs_reduction": ratio * 1.5, "params_reduction": ratio * 1.2,
            "channel_reduction": ratio, "speedup_latency": 1 + ratio + seed * 0.1, "baseline_miou": 0.7,
            "baseline_latency_ms": 20.0, "candidate_latency_ms": 20.0 / (1 + ratio)}
    return {m.name: base.get(m.name, 1.0) for m in CELL_METRICS}


def _step(store: Store, kind: str, config: dict, parents: list, metrics: dict | None = None) -> str:
    return store.create_run(kind=kind, config=config, parents=parents, status="completed", metrics=metrics).id


def record_grid(url: str, tmp_path: Path) -> Recorded:
    """A baseline and a 2 × 2 × 2 bench, linked as the workflows link them (baseline-of, cell-of, step-of,
    pruned-from, finetuned-from, evaluates); each fine-tune appends val_miou per epoch."""
    with Store(url) as store:
        base = _step(store, "train", {"model": "unet", "dataset": "synthetic", "epochs": EPOCHS}, [])
        ckpt = tmp_path / "baseline.pt"
        ckpt.write_bytes(b"weights")
        sha = store.add_artifact(base, kind="checkpoint", path=ckpt).sha256
        grid = {"methods": METHODS, "ratios": RATIOS, "seeds": SEEDS}
        bench = store.create_run(kind="bench", config={"kind": "bench", "grid": grid, "baseline": {}},
                                 parents=[(base, "baseline-of")], status="completed", name="l1,fpgm r0.3,0.5").id
        rec = Recorded(url, bench, base)
        for method in METHODS:
            for ratio in RATIOS:
                for seed in SEEDS:
                    axes = {"method": method, "ratio": ratio, "seed": seed}
                    cell = _step(store, "cell", {**axes, "baseline_sha256": sha}, [(bench, "cell-of")],
                                 _cell_metrics(method, ratio, seed))
                    prune = _step(store, "prune", {"method": method, "global_ratio": ratio, "seed": seed},
                                  [(base, "pruned-from"), (cell, "step-of")])
                    tune = _step(store, "finetune", {"epochs": EPOCHS, "seed": seed},
                                 [(prune, "finetuned-from"), (cell, "step-of")])
                    curve = [(epoch, 0.5 + 0.01 * epoch + ratio / 10 + seed / 100) for epoch in range(EPOCHS)]
                    for epoch, value in curve:
                        store.add_metrics(tune, {"val_miou": value, "train_loss": 1.0 / (epoch + 1)}, step=epoch)
                    ev = _step(store, "eval", {"batch_size": 1}, [(tune, "evaluates"), (base, "baseline-of"),
                                                                   (cell, "step-of")])
                    rec.cells[(method, ratio, seed)] = cell
                    rec.steps[cell] = {"prune": prune, "finetune": tune, "eval": ev}
                    rec.curves[tune] = curve
        store.create_run(kind="train", config={"model": "unet", "method": "l1", "ratio": 0.5}, status="failed")
    return rec


@pytest.fixture
def grid(store_url: str, tmp_path: Path) -> Recorded:
    return record_grid(store_url, tmp_path)


def test_runs_filter_by_kind_status_method_ratio_seed_and_grid(grid: Recorded) -> None:
    with lineage.open(grid.url) as db:
        half = db.runs(kind="cell", method="l1", ratio=0.5, status="completed")
        assert {r.id for r in half} == {grid.cells[("l1", 0.5, s)] for s in SEEDS}
        assert [r.id for r in db.runs(kind="cell", seed=1, ratio=0.3)] == [grid.cells[(m, 0.3, 1)] for m in
                                                                            reversed(METHODS)]  # newest first
        assert [r.id for r in db.runs(method="l1", ratio=0.5, status="failed")] != []  # the failed train run
        assert db.runs(method="l1", ratio=0.5, grid=grid.bench, status="failed") == []
        members = {grid.bench, *grid.cells.values(), *(i for s in grid.steps.values() for i in s.values())}
        assert {r.id for r in db.runs(grid="latest")} == members
        pruned = db.runs(kind="prune", where={"global_ratio": 0.5, "method": "fpgm"})
        assert {r.id for r in pruned} == {grid.steps[grid.cells[("fpgm", 0.5, s)]]["prune"] for s in SEEDS}
        assert len(db.runs(kind="cell", limit=3)) == 3 and db.grids()[0].id == grid.bench


def test_cells_metrics_history_and_lineage_match_what_was_recorded(grid: Recorded) -> None:
    with lineage.open(grid.url) as db:
        cells = db.cells(grid.bench)
        assert [(c.method, c.ratio, c.seed) for c in cells] == list(grid.cells)  # grid order
        for c in cells:
            assert c.cell_run == grid.cells[(c.method, c.ratio, c.seed)]
            assert c.metrics == pytest.approx(_cell_metrics(c.method, c.ratio, c.seed))
            assert {k: getattr(c, f"{k}_run") for k in ("prune", "finetune", "eval")} == grid.steps[c.cell_run]
        tune = cells[0].finetune_run
        assert [(m.step, m.value) for m in db.history(tune, "val_miou")] == pytest.approx(grid.curves[tune])
        assert db.metrics(db.run(tune)) == pytest.approx({"val_miou": grid.curves[tune][-1][1],
                                                                "train_loss": 1 / EPOCHS})
        ev, steps = cells[0].eval_run, grid.steps[cells[0].cell_run]
        hops = [(h.depth, h.relation, h.run.id, h.of) for h in db.ancestors(ev)]
        assert hops[:3] == [(1, "evaluates", tune, ev), (1, "baseline-of", grid.baseline, ev),
                            (1, "step-of", cells[0].cell_run, ev)]
        assert (2, "finetuned-from", steps["prune"], tune) in hops and (2, "cell-of", grid.bench, cells[0].cell_run) in hops
        assert len({h[2] for h in hops}) == len(hops)  # the baseline, reached three ways, once
        below = db.descendants(grid.baseline)
        assert {h.run.id for h in below} == {grid.bench, *grid.cells.values(),
                                             *(i for s in grid.steps.values() for i in s.values())}


def test_the_api_and_the_cli_give_the_same_rows(grid: Recorded, monkeypatch) -> None:
    monkeypatch.setenv("VSS_DB", grid.url)
    with lineage.open(grid.url) as db:
        with Store(grid.url) as store:
            assert db.cells(grid.bench) == cell_rows(store, grid.bench)
        report = runner.invoke(app, ["report", grid.bench, "--format", "json"])
        assert report.exit_code == 0, report.output
        assert json.loads(json.dumps(db.summary(grid.bench))) == json.loads(report.stdout)
        listed = runner.invoke(app, ["runs", "list", "--bench", grid.bench, "--limit", "1000", "--format", "json",
                                     "--columns", "id,kind,status"])
        assert listed.exit_code == 0, listed.output
        assert [{"id": r.id, "kind": r.kind, "status": r.status} for r in db.runs(grid=grid.bench)] == \
            json.loads(listed.stdout)


def test_to_pandas_builds_a_frame_from_the_rows_to_dict(grid: Recorded, monkeypatch) -> None:
    frames = []
    fake = types.SimpleNamespace(DataFrame=types.SimpleNamespace(from_records=lambda rows: frames.append(rows) or rows))
    monkeypatch.setitem(sys.modules, "pandas", fake)
    with lineage.open(grid.url) as db:
        cells = db.cells()
        assert lineage.to_pandas(cells) == [c.to_dict() for c in cells]
        assert lineage.to_pandas(db.ancestors(cells[0].eval_run))[0]["relation"] == "evaluates"
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ModuleNotFoundError, match="pip install pandas"):
        lineage.to_pandas(cells)


def _blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_analysis_page_runs(grid: Recorded, monkeypatch) -> None:
    """Every Python block of docs/analysis.md, in order, in one namespace, against the recorded grid (the
    page's `runs/vss.db` replaced by this back-end's database); then what the blocks computed is checked."""
    blocks = _blocks(DOC.read_text())
    assert len(blocks) >= 6 and all("runs/vss.db" not in b for b in blocks[1:])
    has_pandas = importlib.util.find_spec("pandas") is not None
    ns: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            if "to_pandas" in block and not has_pandas:
                continue  # pandas is optional; test_to_pandas_builds_a_frame_from_the_rows_to_dict covers the call
            exec(compile(block.replace('"runs/vss.db"', repr(grid.url)), str(DOC), "exec"), ns)  # noqa: S102
    assert ns["grid"].id == grid.bench and len(ns["cells"]) == len(grid.cells)
    assert {r.id for r in ns["half"]} == {grid.cells[("l1", 0.5, s)] for s in SEEDS}
    assert len(ns["pruned"]) == len(METHODS) * len(SEEDS)
    assert ns["curve"] == pytest.approx(grid.curves[ns["tune"].id])
    assert ns["baseline"].id == grid.baseline and len(ns["made_from_baseline"]) == 1 + 4 * len(grid.cells)
    printed = out.getvalue()
    assert f"l1     0.50 seed 1 completed mIoU {_cell_metrics('l1', 0.5, 1)['miou']:.3f}" in printed
    ns["db"].close()
