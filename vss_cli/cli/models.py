"""`vss models`: every registered model with its parameters and MACs at an input size."""

from __future__ import annotations

from typing import Annotated

import typer

from vss_cli.cli import options as o
from vss_cli.cli.output import Format, render_rows
from vss_cli.errors import ConfigError

TABLE_COLUMNS = ("model", "params_str", "macs_str", "description")


def models(
    input_size: Annotated[str, typer.Option("--input-size", help="H,W of the one image counted")] = "520,520",
    aux_loss: Annotated[bool, typer.Option("--aux-loss", help="build and count the aux head too, as "
                                           "torchvision's published figures do")] = False,
    num_classes: Annotated[int, typer.Option("--num-classes", help="classifier outputs (19 = Cityscapes; "
                                             "torchvision's weights have 21)")] = 19,
    width: Annotated[float, typer.Option("--width", help="channel multiplier (1.0 = published architecture)")] = 1.0,
    fmt: o.OutFormat = "table",
) -> None:
    """List the models with params and MACs of one forward pass (ptflops aten backend, nothing computed).

    MACs are multiply-accumulates of the convolutions (FLOPs = 2 x MACs), torchvision's convention:
    `vss models --input-size 520,520 --aux-loss --num-classes 21` reproduces its published "GFLOPS"
    (178.72 for deeplabv3_resnet50), which count the aux head and 21 classes. Without --aux-loss the
    counts are those of inference, which is what `vss prune` and `vss eval` report.
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
    render_rows(rows, fmt, title=title, columns=TABLE_COLUMNS if fmt == "table" else None)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
