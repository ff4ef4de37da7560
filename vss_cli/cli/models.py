"""`vss models`: every registered model with its parameters and MACs at an input size."""

from __future__ import annotations

from typing import Annotated

import typer

from vss_cli.cli import options as o
from vss_cli.cli.output import Format, render_rows
from vss_cli.errors import ConfigError

TABLE_COLUMNS = ("model", "params", "MACs", "description")  # the table shows the counts as people read them


def models(
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
    from vss_cli.engine.complexity import model_complexity
    from vss_cli.models import get_model_info, list_models

    if fmt not in {f.value for f in Format}:
        raise ConfigError(f"--format {fmt} is not supported: choose table, csv or json")
    size = o.parse_size(input_size)
    rows = []
    for name in list_models():
        c = model_complexity(name, num_classes, size, width=width, aux_loss=aux_loss)
        rows.append({
            "model": name, "params": c.params, "macs": c.macs, "flops": c.flops,
            "params_str": c.params_str, "macs_str": c.macs_str, "backend": c.backend,
            "input_size": list(size), "num_classes": num_classes, "width": width, "aux_head_counted": aux_loss,
            "description": get_model_info(name).description,
        })
    title = f"MACs at {size[0]}x{size[1]}, {num_classes} classes, width {width}" + (", aux head counted" if aux_loss else "")
    if fmt == "table":
        rows = [{**row, "params": row["params_str"], "MACs": row["macs_str"]} for row in rows]
    render_rows(rows, fmt, title=title, columns=TABLE_COLUMNS if fmt == "table" else None)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
