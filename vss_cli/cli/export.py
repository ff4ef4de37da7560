"""`vss export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from vss_cli.cli import options as o
from vss_cli.cli.output import console
from vss_cli.cli.state import STATE

Run = Annotated[str, typer.Argument(help="run id (or checkpoint .pt) to export")]
Format = Annotated[str, typer.Option("--format", help="onnx or torchscript")]
Out = Annotated[Path | None, typer.Option("--out", help="output file (default runs/export/<run id>/model.onnx|.pt)")]


def export_cmd(run: Run, format: Format = o.EXPORT["format"], out: Out = None, input_size: o.InputSize = None,
               fuse_bn: o.FuseBn = o.EXPORT["fuse_bn"]) -> None:
    """Write a (pruned) model, BN folded, as ONNX or TorchScript; checked against torch and recorded as a run."""
    from vss_cli.workflows.export import export_run
    from vss_cli.workflows.options import ExportOptions

    opts = ExportOptions(run=run, format=format, out=str(out) if out else None, input_size=o.parse_size(input_size),
                         fuse_bn=fuse_bn)
    outcome = export_run(opts, STATE.store())
    console.print(Text.assemble("export run ", (outcome.run_id, "bold"), f": {format}, {outcome.bn_folded} conv-BN "
                                f"pairs folded, max |diff| vs torch {outcome.max_abs_diff:.2e} -> {outcome.path}"),
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
