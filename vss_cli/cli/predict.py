"""`vss predict`: colour-coded predictions, baseline vs candidate panels and a contact sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from vss_cli.cli import options as o
from vss_cli.cli.output import console
from vss_cli.cli.state import STATE

Ckpt = Annotated[str, typer.Option("--ckpt", help="the (baseline) checkpoint (.pt) or run id")]
Candidate = Annotated[str | None, typer.Option("--candidate", help="a pruned checkpoint or run to compare "
                                               "side by side with --ckpt")]
Split = Annotated[str | None, typer.Option("--split", help="val (default) or test (train works too); not with "
                                           "--images")]
Images = Annotated[Path | None, typer.Option("--images", help="a folder of pictures instead of a split "
                                             "(no ground truth)")]
Count = Annotated[int, typer.Option("--n", help="how many images")]
OutDir = Annotated[Path | None, typer.Option("--out", help="parent folder: the run writes into DIR/<run id> "
                                                        "(default runs/predict/<run id>)")]


def predict(ckpt: Ckpt, candidate: Candidate = None, split: Split = None, images: Images = None, n: Count = 8,
            out: OutDir = None, dataset: o.Dataset = None, data_root: o.DataRoot = None,
            input_size: o.InputSize = None, device: o.Device = "auto") -> None:
    """Draw predictions in the dataset's palette; with --candidate, image · truth · baseline · candidate · differences."""
    from vss_cli.errors import ConfigError
    from vss_cli.workflows.predict import PredictOptions, predict_run

    if split is not None and images is not None:
        raise ConfigError(f"--split {split} and --images {images} both choose the pictures: pass one of them")

    opts = PredictOptions(ckpt=ckpt, candidate=candidate, split=split or "val", images=str(images) if images else None,
                          n=n, out_dir=str(out) if out else None, dataset=dataset,
                          data_root=str(data_root) if data_root else None, input_size=o.parse_size(input_size),
                          device=device)
    outcome = predict_run(opts, STATE.store())
    console.print(Text.assemble("predict run ", (outcome.run_id, "bold"), f": {len(outcome.panels)} panels -> "
                                f"{outcome.contact_sheet}"), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
