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
EvalBatch = Annotated[int, typer.Option("--batch-size", help="evaluation and timing batch size")]
OracleLayers = Annotated[int, typer.Option("--oracle-layers", help="layers (groups) the oracle analyses, "
                                           "spread evenly over the network")]
OracleMethods = Annotated[str, typer.Option("--oracle-methods", help="candidate (its pruning criterion) or all")]
ChannelsLast = Annotated[bool, typer.Option("--channels-last", help="time with channels-last memory format")]
Compile = Annotated[bool, typer.Option("--compile", help="time the torch.compile'd models")]
CudaGraphs = Annotated[bool, typer.Option("--cuda-graphs", help="time CUDA-graph replays (CUDA only)")]
Split = Annotated[str, typer.Option("--split", help="split the metrics are measured on")]


def _fmt(value, spec: str = ".4f") -> str:
    return "—" if value is None else format(value, spec)


def summary_table(report: dict) -> Table:
    """Baseline vs candidate side by side, then the ratios."""
    table = Table(title=f"vss eval {report.get('run_id', '')}")
    for col in ("", "baseline", "candidate"):
        table.add_column(col, justify="right" if col else "left")
    b, c = report["baseline_results"], report["candidate_results"]
    bs, cs = report["baseline_speed"], report["candidate_speed"]
    bx, cx = report["baseline_flops_params"], report["candidate_flops_params"]
    table.add_row("mIoU", _fmt(b["mIoU"]), _fmt(c["mIoU"]))
    table.add_row("pixel accuracy", _fmt(b["Pixel_Accuracy"]), _fmt(c["Pixel_Accuracy"]))
    table.add_row("MACs", bx["FLOPs"], cx["FLOPs"])
    table.add_row("params", bx["Params"], cx["Params"])
    def ms(speed: dict) -> str:
        return _fmt(speed["median_ms"], ".2f") + (f" (noisy: IQR/median {speed['spread']:.2f})" if speed.get("noisy") else "")

    table.add_row(f"latency ms (median, batch {bs['batch']}, {bs['dtype']})", ms(bs), ms(cs))
    table.add_row("images/s", _fmt(bs["fps"], ".1f"), _fmt(cs["fps"], ".1f"))
    ratios = report["pruning_ratios"]
    table.add_section()
    table.add_row("mIoU retention", "", _fmt(report["miou_retention"]))
    table.add_row("pixel accuracy retention", "", _fmt(report["pixel_accuracy_retention"]))
    noisy = f" [noisy: IQR/median {report['speedup_iqr']:.2f}]" if report.get("speedup_noisy") else ""
    table.add_row("speedup (latency / fps)", "", f"{_fmt(report['speedup_latency'], '.3f')} / "
                  f"{_fmt(report['speedup_fps'], '.3f')}{noisy}")
    table.add_row("timed as", "", ", ".join(k for k in ("fuse_bn", "channels_last", "compiled", "cuda_graphs")
                                             if cs.get(k)) or "as stored")
    table.add_row("channels removed", str(ratios["channels_before"]),
                  f"{ratios['channels_after']} ({_fmt(ratios['channel_prune_ratio'], '.1%')})")
    table.add_row("reconstruction MSE", "", _fmt(report["reconstruction_mse"], ".4g"))
    oracle = report.get("oracle_analysis") or {}
    for name, m in oracle.get("methods", {}).items():
        value = m["error"] or (f"ρ {_fmt(m['spearman'], '.3f')}  τ {_fmt(m['kendall'], '.3f')}  "
                               f"bottom-20% {_fmt(m['overlap'], '.2f')}")
        table.add_row(f"oracle: {name}", "", value)
    if oracle:
        table.add_row("oracle cost", "", f"{oracle['seconds']:.1f}s, {oracle['forward_passes']} forwards")
    return table


def eval_cmd(
    baseline: Baseline, candidate: Candidate, report: Report = None, batch_size: EvalBatch = 4,
    input_size: o.InputSize = None, oracle_samples: o.OracleSamples = 0, oracle_layers: OracleLayers = 4,
    oracle_methods: OracleMethods = "candidate", dtype: o.TimingDtype = "fp32", channels_last: ChannelsLast = False,
    device: o.Device = "auto", dataset: o.CkptDataset = None, data_root: o.DataRoot = None,
    speed_iters: o.SpeedIters = 50, warmup: o.WarmupIters = 10, split: Split = "val", num_workers: o.NumWorkers = 0,
    model: o.Model = None, fuse_bn: o.FuseBn = True, compile: Compile = False, cuda_graphs: CudaGraphs = False,
) -> None:
    """Compare a candidate with its baseline: metrics, retention, speed, MACs, channels, oracle agreement."""
    from vss_cli.workflows.evaluate import EvalOptions, eval_run

    opts = EvalOptions(
        baseline=baseline, candidate=candidate, report=report, batch_size=batch_size,
        input_size=o.parse_size(input_size), dataset=dataset, data_root=str(data_root) if data_root else None,
        device=device, dtype=dtype, channels_last=channels_last, speed_iters=speed_iters, warmup=warmup,
        oracle_samples=oracle_samples, oracle_layers=oracle_layers, oracle_methods=oracle_methods, split=split,
        num_workers=num_workers, model=model, fuse_bn=fuse_bn, compile=compile, cuda_graphs=cuda_graphs,
    )
    outcome = eval_run(opts, STATE.store())
    console.print(summary_table(outcome.report))
    console.print(f"report -> {outcome.report_path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
