"""`vss prune`."""

from __future__ import annotations

from typing import Annotated

import typer

from vss_cli.cli import options as o
from vss_cli.cli.output import console
from vss_cli.cli.state import STATE

Ckpt = Annotated[str, typer.Option("--ckpt", help="checkpoint (.pt) or run id to prune")]
Method = Annotated[str, typer.Option("--method", help="l1, l2, random, fpgm, taylor, slimming, fgp, sirfp or dmcp")]
Ratio = Annotated[float, typer.Option("--global-ratio", help="fraction of the --budget (prunable channels, MACs "
                                      "or measured latency) removed, in (0, 1)")]
SparseEpochs = Annotated[int | None, typer.Option("--sparse-epochs", help="slimming: sparse phase length when "
                                                  "the parent was trained without --slimming-lambda")]
FgpShare = Annotated[float | None, typer.Option("--fgp-share", help="fgp: keep per layer the top channels whose "
                                                "cumulative share reaches T (the paper's rule, T=0.8)")]
TargetMacs = Annotated[float | None, typer.Option("--target-macs", help="dmcp: MACs target (G) instead of the ratio")]
SpeedCheckIters = Annotated[int, typer.Option("--speed-check-iters", help="paired iterations timing the pruned "
                                              "model against its parent, as deployed (0 = off)")]
RequireSpeedup = Annotated[bool, typer.Option("--require-speedup", help="fail the run (exit 1, no checkpoint) "
                                             "when the pruned model is not faster than its parent")]
MethodOpt = Annotated[list[str] | None, typer.Option("--option", help="method option KEY=VALUE (repeatable)")]


def _method_options(pairs: list[str] | None, **named) -> dict:
    opts = {k: v for k, v in named.items() if v is not None}
    for pair in pairs or []:
        if "=" not in pair:
            raise typer.BadParameter(f"--option '{pair}' is not KEY=VALUE")
        k, v = pair.split("=", 1)
        try:
            opts[k.strip().replace("-", "_")] = float(v) if any(c in v for c in ".e") else int(v)
        except ValueError:
            opts[k.strip().replace("-", "_")] = v
    return opts


def prune(
    ckpt: Ckpt, method: Method = "l1", global_ratio: Ratio = 0.3, round_to: o.RoundToAuto = "8",
    allocation: o.Allocation = "paper", normalizer: o.Normalizer = "mean", budget: o.Budget = "channels",
    input_size: o.InputSize = None, samples: o.Samples = 64, seed: o.Seed = 0, device: o.Device = "auto",
    dataset: o.CkptDataset = None, data_root: o.DataRoot = None, save: o.Save = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="minibatch size while scoring")] = 8,
    sparse_epochs: SparseEpochs = None, fgp_share: FgpShare = None, target_macs: TargetMacs = None,
    option: MethodOpt = None, model: o.Model = None, speed_check_iters: SpeedCheckIters = 20,
    require_speedup: RequireSpeedup = False, dtype: o.TimingDtype = "fp32",
) -> None:
    """Remove channels physically with one criterion; records MACs, params and widths before/after."""
    from vss_cli.workflows.prune import PruneOptions, prune_run

    opts = PruneOptions(
        ckpt=ckpt, method=method, global_ratio=global_ratio, round_to=o.parse_round_to(round_to),
        allocation=allocation, normalizer=normalizer, budget=budget, input_size=o.parse_size(input_size),
        samples=samples, seed=seed, device=device, dataset=dataset, data_root=str(data_root) if data_root else None,
        method_options=_method_options(option, sparse_epochs=sparse_epochs, share=fgp_share,
                                       target_macs=target_macs),
        batch_size=batch_size, save=str(save) if save else None, model=model, speed_check_iters=speed_check_iters,
        require_speedup=require_speedup, dtype=dtype,
    )
    out = prune_run(opts, STATE.store())
    r = out.report
    console.print(
        f"prune run [bold]{out.run_id}[/]: {r.method} removed {r.channel_prune_ratio:.1%} of channels "
        f"({r.channels_before} -> {r.channels_after}); MACs {r.macs_before / 1e9:.3f}G -> {r.macs_after / 1e9:.3f}G "
        f"(-{r.macs_reduction:.1%}); "
        f"params {r.params_before / 1e6:.3f}M -> {r.params_after / 1e6:.3f}M -> {out.checkpoint}", highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("prune")(prune)
