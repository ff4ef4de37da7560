"""`vss models`: every registered model with its parameters and MACs at an input size."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from vss_cli.cli import options as o
from vss_cli.cli.output import Format, console, render_rows
from vss_cli.errors import ConfigError

TABLE_COLUMNS = ("model", "params", "MACs", "description")  # the table shows the counts as people read them


def models(
    ctx: typer.Context,
    input_size: Annotated[str, typer.Option("--input-size", help="H,W of the one image counted")] = "520,520",
    aux_loss: Annotated[bool, typer.Option("--aux-loss", help="build the aux head and count it too "
                                           "(torchvision's published figures do)")] = False,
    num_classes: Annotated[int, typer.Option("--num-classes", help="classifier outputs (19 = Cityscapes; "
                                             "torchvision's weights have 21)")] = 19,
    width: Annotated[float, typer.Option("--width", help="channel multiplier (1.0 = published architecture)")] = 1.0,
    fmt: o.OutFormat = "table",
) -> None:
    """List the models with the params and MACs of one forward pass at --input-size.

    MACs are multiply-accumulates of the convolutions (FLOPs = 2 x MACs), counted with ptflops' aten
    backend on a model built on the meta device (nothing is allocated or computed). torchvision's
    model tables list the same quantity as "GFLOPS", with the aux head and 21 classes at 520x520:
    `--input-size 520,520 --aux-loss --num-classes 21` reproduces them (178.72 G for
    deeplabv3_resnet50); the default 19 classes changes them by under 0.01%. Without --aux-loss the
    counts are inference's (aux head excluded), as `vss prune` and `vss eval` report them.
    """
    if ctx.invoked_subcommand is not None:
        return
    from vss_cli.engine.complexity import model_complexity
    from vss_cli.models import get_model_info, list_models, list_sources

    if fmt not in {f.value for f in Format}:
        raise ConfigError(f"--format {fmt} is not supported: choose table, csv or json")
    size = o.parse_size(input_size)
    rows = []
    for name in list_models():
        aux = aux_loss and bool(get_model_info(name).structure.aux)  # LR-ASPP has no aux head
        c = model_complexity(name, num_classes, size, width=width, aux_loss=aux)
        rows.append({
            "model": name, "params": c.params, "macs": c.macs, "flops": c.flops,
            "params_str": c.params_str, "macs_str": c.macs_str, "backend": c.backend,
            "input_size": list(size), "num_classes": num_classes, "width": width, "aux_head_counted": aux,
            "description": get_model_info(name).description,
        })
    title = f"MACs at {size[0]}x{size[1]}, {num_classes} classes, width {width}" + (", aux head counted" if aux_loss else "")
    if fmt == "table":
        rows = [{**row, "params": row["params_str"], "MACs": row["macs_str"]} for row in rows]
    render_rows(rows, fmt, title=title, columns=TABLE_COLUMNS if fmt == "table" else None)
    if fmt == "table":
        schemes = "; ".join(s.scheme for s in list_sources())
        console.print(f"also: {schemes} (e.g. smp:DeepLabV3Plus:resnet50, my_pkg.nets:build_net); "
                      "`vss models check MODEL` tells whether vss can prune it", highlight=False, soft_wrap=True)


def parse_model_options(values: list[str] | None) -> dict:
    """`KEY=VALUE` pairs as builder keyword options; a VALUE that reads as JSON (numbers, lists,
    true/false/null) is that value, anything else a string."""
    options = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"--model-option {item!r} is not KEY=VALUE: pass e.g. --model-option encoder_depth=4")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


ModelOption = Annotated[list[str] | None, typer.Option(
    "--model-option", help="KEY=VALUE keyword option of the model's builder (repeatable; JSON values, "
    "e.g. decoder_channels=[64,32,16,8,4])")]


def check(
    model: Annotated[str, typer.Argument(help="a registered model, smp:ARCH:ENCODER or package.module:factory")],
    input_size: Annotated[str, typer.Option("--input-size", help="H,W the model is built and traced at")] = "64,128",
    num_classes: Annotated[int, typer.Option("--num-classes", help="classifier outputs")] = 19,
    model_option: ModelOption = None,
    ratio: Annotated[float, typer.Option("--ratio", help="share of MACs the dry-run prunes")] = 0.3,
    data_method: Annotated[str, typer.Option("--data-method", help="the data-driven method of the dry run "
                                             "(scored on random images)")] = "taylor",
) -> None:
    """Can vss prune this network? Groups, unpruned layers and why, regions, and a dry-run prune.

    Exits 2 with one line naming the module and op when Torch-Pruning cannot follow the network.
    """
    from vss_cli.workflows.model_check import check_model

    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"--ratio {ratio} is outside (0, 1): pass a fraction such as 0.3")
    size = o.parse_size(input_size)
    result = check_model(model, num_classes, size, options=parse_model_options(model_option), ratio=ratio,
                         data_method=data_method)
    show_check(result)
    if not result.passed:
        raise typer.Exit(2)


def show_check(result) -> None:
    from vss_cli.engine.complexity import format_count

    h, w = result.input_size
    console.print(f"{result.model} at {h}x{w}: {format_count(result.macs)} MACs, {format_count(result.params)} params",
                  highlight=False, soft_wrap=True)
    regions = "; ".join(f"{k}: {', '.join(v) or '-'}" for k, v in result.regions.items())
    console.print(f"regions: {regions}", highlight=False, soft_wrap=True)
    render_rows([{"region": r.region, "groups": r.groups, "channels": r.channels,
                  "share of MACs": f"{r.macs_share:.1%}"} for r in result.groups], "table", title="prunable groups")
    if result.unpruned:
        render_rows([vars(r) for r in result.unpruned], "table", title="layers left unpruned")
    render_rows([{"method": r.method, "allocation": r.allocation, "output shape kept": _yes(r.shape_kept),
                  "MACs removed": f"{r.macs_reduction:.3f}", f"within ±{result.tolerance:g}": _yes(r.within_tolerance),
                  "replay bit-identical": _yes(r.replay_identical)} for r in result.dry_runs], "table",
                title="dry-run prune (budget macs, round-to 1)")


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="List the models, or check that vss can prune one.", invoke_without_command=True)
    group.callback()(models)
    group.command("check")(check)
    app.add_typer(group, name="models")
