"""`vss eval`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from vss_cli.cli import options as o
from vss_cli.cli.output import console
from vss_cli.cli.state import STATE

Baseline = Annotated[str, typer.Option("--baseline", help="baseline checkpoint (.pt) or run id")]
Candidate = Annotated[str, typer.Option("--candidate", help="pruned (or fine-tuned) checkpoint (.pt) or run id")]
Report = Annotated[str | None, typer.Option("--report", help="JSON report path (default runs/eval/<run id>/"
                                            "evaluation_report.json)")]
NOISY = " (noisy timings)"
E = o.EVAL


def _fmt(value, spec: str = ".4f") -> str:
    return "—" if value is None else format(value, spec)


def _side_rows(table: Table, report) -> None:
    b, c = report.baseline_results, report.candidate_results
    bs, cs = report.baseline_speed, report.candidate_speed
    bx, cx = report.baseline_flops_params, report.candidate_flops_params
    ratios = report.pruning_ratios
    table.add_row("mIoU", _fmt(b["mIoU"]), _fmt(c["mIoU"]))
    table.add_row("pixel accuracy", _fmt(b["Pixel_Accuracy"]), _fmt(c["Pixel_Accuracy"]))
    table.add_row("MACs", bx["FLOPs"], cx["FLOPs"])
    table.add_row("params", bx["Params"], cx["Params"])
    table.add_row("prunable channels", str(ratios.channels_before), str(ratios.channels_after))

    def ms(speed: dict) -> str:
        spread = speed.get("spread")
        noisy = (f" (noisy: IQR/median {spread:.2f})" if spread is not None else " (noisy)") if speed.get("noisy") else ""
        return _fmt(speed["median_ms"], ".2f") + noisy

    table.add_row(f"latency ms (median, batch {bs['batch']}, {bs['dtype']})", ms(bs), ms(cs))
    table.add_row("images/s", _fmt(bs["fps"], ".1f"), _fmt(cs["fps"], ".1f"))


def summary_table(report) -> Table:
    """Baseline vs candidate side by side, then the ratios (`report` is a `report.schema.EvalReport`)."""
    table = Table(title=f"vss eval {report.run_id or ''}")
    for col in ("", "baseline", "candidate"):  # the values whole at any width; the row names fold
        table.add_column(col, justify="right" if col else "left", overflow="fold")
    _side_rows(table, report)
    ratios = report.pruning_ratios
    table.add_section()
    table.add_row("mIoU retention", "", _fmt(report.miou_retention))
    table.add_row("pixel accuracy retention", "", _fmt(report.pixel_accuracy_retention))
    iqr = report.speedups.get("speedup_iqr")
    # parentheses, not brackets: Rich reads `[noisy: ...]` as a markup tag and drops it from the cell
    noisy = (f" (noisy: IQR/median {iqr:.2f})" if iqr is not None else NOISY) if report.speed_noisy else ""
    table.add_row("speedup (latency / fps)", "", f"{_fmt(report.speedup_latency, '.3f')} / "
                  f"{_fmt(report.speedups.get('speedup_fps'), '.3f')}{noisy}")
    timed = report.candidate_speed
    table.add_row("timed as", "", ", ".join(k for k in ("fuse_bn", "channels_last", "compiled", "cuda_graphs")
                                             if timed.get(k)) or "as stored")
    table.add_row("channels removed", "", f"{ratios.channels_removed} ({_fmt(ratios.channel_prune_ratio, '.1%')})")
    table.add_row("reconstruction MSE", "", _fmt(report.reconstruction_mse, ".4g"))
    oracle = report.oracle_analysis or {}
    for name, m in oracle.get("methods", {}).items():
        value = m["error"] or (f"ρ {_fmt(m['spearman'], '.3f')}  τ {_fmt(m['kendall'], '.3f')}  "
                               f"bottom-20% {_fmt(m['overlap'], '.2f')}")
        table.add_row(f"oracle: {name}", "", value)
    if oracle:
        table.add_row("oracle cost", "", f"{oracle['seconds']:.1f}s, {oracle['forward_passes']} forwards")
    return table


def eval_cmd(
    baseline: Baseline, candidate: Candidate, report: Report = None, batch_size: o.EvalBatch = E["batch_size"],
    input_size: o.InputSize = None, oracle_samples: o.OracleSamples = E["oracle_samples"],
    oracle_layers: o.OracleLayers = E["oracle_layers"], oracle_methods: o.OracleMethods = E["oracle_methods"],
    dtype: o.TimingDtype = E["dtype"], channels_last: o.ChannelsLast = E["channels_last"],
    device: o.Device = "auto", dataset: o.CkptDataset = None, data_root: o.DataRoot = None,
    speed_iters: o.SpeedIters = E["speed_iters"], warmup: o.WarmupIters = E["warmup"], split: o.Split = E["split"],
    num_workers: o.NumWorkers = E["num_workers"], model: o.Model = None,
    reconstruction_batches: o.ReconBatches = E["reconstruction_batches"], fuse_bn: o.FuseBn = E["fuse_bn"],
    compile: o.Compile = E["compile"], cuda_graphs: o.CudaGraphs = E["cuda_graphs"],
) -> None:
    """Compare a candidate with its baseline: metrics, retention, speed, MACs, channels, oracle agreement."""
    from vss_cli.workflows.paths import precheck

    precheck(data_root, {"--baseline": baseline, "--candidate": candidate}, STATE.store())  # before torch loads
    from vss_cli.workflows.evaluate import EvalOptions, eval_run

    opts = EvalOptions(
        baseline=baseline, candidate=candidate, report=report, batch_size=batch_size,
        input_size=o.parse_size(input_size), dataset=dataset, data_root=str(data_root) if data_root else None,
        device=device, dtype=dtype, channels_last=channels_last, speed_iters=speed_iters, warmup=warmup,
        oracle_samples=oracle_samples, oracle_layers=oracle_layers, oracle_methods=oracle_methods, split=split,
        num_workers=num_workers, model=model, reconstruction_batches=reconstruction_batches, fuse_bn=fuse_bn,
        compile=compile, cuda_graphs=cuda_graphs,
    )
    outcome = eval_run(opts, STATE.store())
    console.print(summary_table(outcome.report))
    console.print(f"report -> {outcome.report_path}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
