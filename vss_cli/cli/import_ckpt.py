"""`vss import`: bring a research-repo checkpoint in as a vss checkpoint and run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from vss_cli.cli import options as o
from vss_cli.cli.models import ModelOption, parse_model_options
from vss_cli.cli.output import console
from vss_cli.cli.state import STATE


def import_ckpt(
    ckpt: Annotated[Path, typer.Argument(help="the research repo's .pt/.pth file")],
    model: Annotated[str, typer.Option("--model", help="the vss model it holds (see `vss models`)")],
    dataset: Annotated[str | None, typer.Option("--dataset", help="dataset it was trained on (sets the class "
                                                "count); default: inferred from --data-root, else synthetic")] = None,
    data_root: o.DataRoot = None,
    width: Annotated[float | None, typer.Option("--width", help="channel multiplier it was built with")] = None,
    aux_loss: Annotated[bool, typer.Option("--aux-loss", help="it has the auxiliary head")] = False,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="allow a pickled model object: unpickling "
                                               "runs code from the file, so only for files you trust")] = False,
    save: o.Save = None,
    model_option: ModelOption = None,
) -> None:
    """Turn a plain state_dict, a {'state_dict': ...} file or (with --trust-pickle) a pickled module into
    a vss checkpoint; every tensor must fit the model (strict load)."""
    from vss_cli.workflows.import_ckpt import ImportOptions, import_run

    kwargs = {**({"width": width} if width is not None else {}), **({"aux_loss": True} if aux_loss else {}),
              **parse_model_options(model_option)}
    outcome = import_run(ImportOptions(ckpt=str(ckpt), model=model, dataset=dataset,
                                       data_root=str(data_root) if data_root else None, model_kwargs=kwargs,
                                       trust_pickle=trust_pickle, save=str(save) if save else None), STATE.store())
    console.print(Text.assemble("import run ", (outcome.run_id, "bold"), f": {outcome.tensors} tensors "
                                f"({outcome.source_form}) -> {outcome.checkpoint}"), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("import")(import_ckpt)
