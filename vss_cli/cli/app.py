"""The `vss` application: global options, error mapping, and the command modules."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from vss_cli.cli.output import err_console
from vss_cli.cli.state import STATE
from vss_cli.errors import VssError

# Each module defines `register(app)`; adding a command means adding a module here.
COMMAND_MODULES = ("train", "prune", "eval", "bench", "report", "predict", "runs", "data", "models")


class VssGroup(TyperGroup):
    """Maps a `VssError` to one line on stderr and exit code 2; anything else to exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VssError as exc:
            if STATE.debug:
                raise
            err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
            ctx.exit(exc.exit_code)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the top of the program
            if STATE.debug or getattr(exc, "__module__", "").startswith(("click", "typer")):
                raise
            err_console.print(
                f"[bold red]failed:[/] {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            ctx.exit(1)


app = typer.Typer(
    cls=VssGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Structured channel pruning of semantic-segmentation networks, with a lineage database.",
)


@app.callback()
def _global(
    db: Annotated[str | None, typer.Option("--db", envvar="VSS_DB", help="database path or URL (default runs/vss.db)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    threads: Annotated[int | None, typer.Option("--threads", envvar="VSS_THREADS",
                                                help="CPU threads for torch (default: torch's choice)")] = None,
) -> None:
    STATE.db, STATE.quiet, STATE.debug = db, quiet, debug
    if quiet:
        os.environ["VSS_QUIET"] = "1"
    if threads:
        import torch

        torch.set_num_threads(threads)
    STATE._store = None


for _name in COMMAND_MODULES:
    importlib.import_module(f"vss_cli.cli.{_name}").register(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
