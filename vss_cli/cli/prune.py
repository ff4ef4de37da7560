"""`vss prune`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from vss_cli.cli import options as o
from vss_cli.cli.output import console
from vss_cli.cli.state import STATE

Ckpt = Annotated[str, typer.Option("--ckpt", help="checkpoint (.pt) or run id to prune")]
Method = Annotated[str, typer.Option("--method", help="l1, l2, random, fpgm, taylor, slimming, fgp, sirfp or dmcp")]
Ratio = Annotated[float, typer.Option("--global-ratio", help="fraction of the --budget (prunable channels, MACs "
                                      "or measured latency) removed, in (0, 1)")]
SparseEpochs = Annotated[int | None, typer.Option("--sparse-epochs", help="slimming: sparse phase length when "
                                                  "the parent was trained without --slimming-lambda")]
FgpShare = Annotated[float | None, typer.Option("--fgp-share", help="fgp: fix T of its paper rule (per layer the "
                                                "top channels whose cumulative share reaches T, paper 0.8); the "
                                                "budget is then not applied (default: T searched to meet it)")]
TargetMacs = Annotated[float | None, typer.Option("--target-macs", help="dmcp: MACs target (G) instead of the ratio")]
ScoreBatch = Annotated[int, typer.Option("--batch-size", help="minibatch size while scoring")]


def _method_options(pairs: list[str] | None, method: str, **named) -> dict:
    """Named method flags, then `--option KEY=VALUE` (or `METHOD:KEY=VALUE` naming this method)."""
    parsed = o.parse_method_options(pairs)
    stray = sorted(set(parsed) - {None, method})
    if stray:
        raise typer.BadParameter(f"--option {stray[0]}:... names another method than --method {method}")
    return {**{k: v for k, v in named.items() if v is not None}, **parsed.get(None, {}), **parsed.get(method, {})}


def prune(
    ckpt: Ckpt, method: Method = o.PRUNE["method"], global_ratio: Ratio = o.PRUNE["global_ratio"],
    round_to: o.RoundToAuto = str(o.PRUNE["round_to"]), allocation: o.Allocation = o.PRUNE["allocation"],
    normalizer: o.Normalizer = o.PRUNE["normalizer"], budget: o.Budget = o.PRUNE["budget"],
    input_size: o.InputSize = None, samples: o.Samples = o.PRUNE["samples"], seed: o.Seed = o.PRUNE["seed"],
    device: o.Device = "auto",
    dataset: o.CkptDataset = None, data_root: o.DataRoot = None, save: o.Save = None,
    batch_size: ScoreBatch = o.PRUNE["batch_size"],
    sparse_epochs: SparseEpochs = None, fgp_share: FgpShare = None, target_macs: TargetMacs = None,
    option: o.MethodOption = None, model: o.Model = None,
    speed_check_iters: o.SpeedCheckIters = o.PRUNE["speed_check_iters"],
    require_speedup: o.RequireSpeedup = o.PRUNE["require_speedup"], dtype: o.TimingDtype = o.PRUNE["dtype"],
) -> None:
    """Remove channels physically with one criterion; records MACs, params and widths before/after."""
    from vss_cli.workflows.paths import precheck

    precheck(data_root, {"--ckpt": ckpt}, STATE.store())  # before torch loads: a typo fails at once
    from vss_cli.workflows.prune import PruneOptions, prune_run

    opts = PruneOptions(
        ckpt=ckpt, method=method, global_ratio=global_ratio, round_to=o.parse_round_to(round_to),
        allocation=allocation, normalizer=normalizer, budget=budget, input_size=o.parse_size(input_size),
        samples=samples, seed=seed, device=device, dataset=dataset, data_root=str(data_root) if data_root else None,
        method_options=_method_options(option, method, sparse_epochs=sparse_epochs, share=fgp_share,
                                       target_macs=target_macs),
        batch_size=batch_size, save=str(save) if save else None, model=model, speed_check_iters=speed_check_iters,
        require_speedup=require_speedup, dtype=dtype,
    )
    out = prune_run(opts, STATE.store())
    r = out.report
    console.print(
        Text.assemble("prune run ", (out.run_id, "bold"), f": {r.method} removed {r.channel_prune_ratio:.1%} of channels "
        f"({r.channels_before} -> {r.channels_after}); MACs {r.macs_before / 1e9:.3f}G -> {r.macs_after / 1e9:.3f}G "
        f"(-{r.macs_reduction:.1%}); "
        f"params {r.params_before / 1e6:.3f}M -> {r.params_after / 1e6:.3f}M -> {out.checkpoint}"), highlight=False,
        soft_wrap=True,
    )
    note = rounding_note(opts, r.channel_prune_ratio)
    if note:
        console.print(note, highlight=False, markup=False, soft_wrap=True)


def rounding_note(opts, achieved: float) -> str | None:
    """Why a channel budget removed fewer channels than asked: --round-to rounds kept widths up."""
    k = opts.round_to
    if opts.budget != "channels" or not isinstance(k, int) or k <= 1 or achieved >= opts.global_ratio - 0.005:
        return None
    return (f"note: --global-ratio {opts.global_ratio:g} asked for {opts.global_ratio:.1%} of the channels; "
            f"{achieved:.1%} were removed because --round-to {k} rounds kept widths up to multiples of {k} in "
            f"layers at least {4 * k} wide (--round-to 1 removes exactly what the allocation asks)")


def register(app: typer.Typer) -> None:
    app.command("prune")(prune)
