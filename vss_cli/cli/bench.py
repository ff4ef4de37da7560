"""`vss bench`: a method × ratio × seed grid that resumes, skips and shares cells between processes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from vss_cli.cli import options as o
from vss_cli.cli.output import console, err_console
from vss_cli.cli.state import STATE

Baseline = Annotated[str | None, typer.Option("--baseline", help="baseline checkpoint (.pt) or run id; default: "
                                              "reuse (or train) the dataset's default baseline")]
Methods = Annotated[str, typer.Option("--methods", help="comma-separated pruning methods (see `vss prune --help`)")]
Ratios = Annotated[str, typer.Option("--ratios", help="comma-separated global pruning ratios, each in (0, 1)")]
Seeds = Annotated[str, typer.Option("--seeds", help="comma-separated seeds (pruning samples, fine-tuning)")]
FinetuneEpochs = Annotated[int, typer.Option("--finetune-epochs", help="fine-tuning epochs per cell, the same "
                                             "schedule for every cell (0 = evaluate the pruned model as is)")]
FinetuneLr = Annotated[float | None, typer.Option("--finetune-lr", help="fine-tuning learning rate (dataset default)")]
BaselineEpochs = Annotated[int | None, typer.Option("--baseline-epochs", help="epochs when bench trains the "
                                                    "baseline (dataset default)")]
Width = Annotated[float | None, typer.Option("--width", help="channel multiplier of a baseline bench trains")]
OutDir = Annotated[Path | None, typer.Option("--out-dir", help="folder of benchmark_summary.json and the cells' "
                                             "files (default runs/bench/<bench run id>)")]
SkipExisting = Annotated[bool, typer.Option("--skip-existing", help="reuse completed cells (this grid's or "
                                            "another's) whose artifacts still match their sha256; rerun the rest")]
EvalBatch = Annotated[int, typer.Option("--batch-size", help="evaluation and timing batch size")]
Grace = Annotated[float, typer.Option("--worker-grace", help="seconds without a heartbeat after which another "
                                      "process takes over a running cell")]

CELL_COLUMNS = ("method", "ratio", "seed", "status", "mIoU", "retain", "speedup", "ch↓", "MACs↓", "note")


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _num(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _table_rows(rows) -> list[dict]:
    return [{
        "method": r.method, "ratio": f"{r.ratio:g}", "seed": r.seed, "status": r.status,
        "mIoU": _num(r.miou, ".4f"), "retain": _num(r.miou_retention, ".3f"),
        "speedup": _num(r.speedup_latency, ".2f"), "ch↓": _pct(r.channel_reduction),
        "MACs↓": _pct(r.macs_reduction), "note": "reused" if r.skipped else (r.error or "")[:60],
    } for r in rows]


def _cell_table(run_id: str, rows) -> Table:
    """One line per cell; a light box so it fits an 80-column terminal."""
    table = Table(title=f"vss bench {run_id}", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in CELL_COLUMNS:
        table.add_column(name, no_wrap=name != "note", justify="left" if name in ("method", "status", "note") else "right")
    for row in _table_rows(rows):
        table.add_row(*(str(row[name]) for name in CELL_COLUMNS))
    return table


def bench(
    baseline: Baseline = None, methods: Methods = "fpgm,sirfp", ratios: Ratios = "0.2,0.3,0.5", seeds: Seeds = "0",
    finetune_epochs: FinetuneEpochs = 5, finetune_lr: FinetuneLr = None, out_dir: OutDir = None,
    skip_existing: SkipExisting = False, oracle_samples: o.OracleSamples = 0, dataset: o.Dataset = None,
    data_root: o.DataRoot = None, model: o.Model = None, width: Width = None, baseline_epochs: BaselineEpochs = None,
    input_size: o.InputSize = None, batch_size: EvalBatch = 4, round_to: o.RoundTo = 8, samples: o.Samples = 64,
    max_iters_per_epoch: o.MaxIters = None, speed_iters: o.SpeedIters = 50, warmup: o.WarmupIters = 10, dtype: o.TimingDtype = "fp32",
    device: o.Device = "auto", worker_grace: Grace = 300.0,
) -> None:
    """Prune → fine-tune → evaluate every method × ratio × seed against one baseline.

    Rerunning the same command continues the grid (completed cells are never rerun, failed ones are
    retried); several processes on one database share its cells. Writes benchmark_summary.json.
    """
    from vss_cli.workflows.bench import BenchOptions, bench_run

    opts = BenchOptions(
        methods=o.parse_list(methods), ratios=o.parse_list(ratios, float), seeds=o.parse_list(seeds, int),
        baseline=baseline, finetune_epochs=finetune_epochs, finetune_lr=finetune_lr,
        max_iters_per_epoch=max_iters_per_epoch, baseline_epochs=baseline_epochs, dataset=dataset,
        data_root=str(data_root) if data_root else None, model=model, width=width,
        input_size=o.parse_size(input_size), batch_size=batch_size, round_to=round_to, samples=samples,
        oracle_samples=oracle_samples, speed_iters=speed_iters, warmup=warmup, dtype=dtype, device=device,
        out_dir=str(out_dir) if out_dir else None, skip_existing=skip_existing, worker_grace=worker_grace,
    )
    outcome = bench_run(opts, STATE.store())
    stats = outcome.stats
    console.print(_cell_table(outcome.run_id, outcome.rows))
    console.print(
        f"{stats['completed']}/{stats['total_experiments']} cells completed ({stats['skipped']} reused), "
        f"{stats['failed']} failed -> {outcome.summary_path}", highlight=False,
    )
    if stats["failed"]:
        err_console.print(f"[bold red]failed:[/] {stats['failed']} cell(s) failed; their errors are in the "
                          "summary and in `vss runs show RUN`", highlight=False)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
