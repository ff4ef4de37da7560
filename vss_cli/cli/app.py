"""The `vss` application: global options, error mapping, and the command modules."""

from __future__ import annotations

import gc
import importlib
import re
import sys
from typing import Annotated

import typer
from rich.text import Text
from typer.core import TyperGroup

try:  # typer >= 0.26 vendors click; older typer raises click's own
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError

from vss_cli.cli.help import assign_panels, unwrap_help
from vss_cli.cli.help import install as install_help_layout
from vss_cli.cli.output import err_console
from vss_cli.cli.state import STATE
from vss_cli.engine.progress import configure as configure_progress
from vss_cli.errors import DiskFull, Interrupted, VssError
from vss_cli.threads import apply_threads

# Each module defines `register(app)`; adding a command means adding a module here.
COMMAND_MODULES = ("train", "prune", "eval", "bench", "report", "predict", "runs", "data", "models", "methods",
                   "import_ckpt", "export")

BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}
OOM_HINT = ("the GPU ran out of memory: lower --batch-size or --input-size, add --amp (CUDA), or free the GPU; "
            "see docs/guide.md#out-of-memory")


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "cuda out of memory" in str(exc).lower()


def _flags_as_flags(cmd, ctx) -> None:
    """Show boolean flags as `--amp` (with their `--no-amp`), not as options taking a `<bool>`; help
    paragraphs without hard line breaks; options in groups."""
    cmd.help = unwrap_help(cmd.help)
    assign_panels(cmd)
    for param in [*cmd.params, cmd.get_help_option(ctx)]:
        if param is not None and getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(cmd, "commands", {}).values():
        _flags_as_flags(sub, ctx)


def _print_error(label: str, message: str) -> None:
    """`label` in bold red, then `message` as plain text: brackets in it (a run id, a path) are not markup."""
    err_console.print(Text.assemble((label, "bold red"), " ", message), highlight=False, soft_wrap=True)


install_help_layout()


class VssGroup(TyperGroup):
    """Maps a `VssError` to one line on stderr and exit code 2; anything else to exit 1."""

    def parse_args(self, ctx, args):
        _flags_as_flags(self, ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VssError as exc:
            if STATE.debug:
                raise
            _print_error("error:", str(exc))
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:  # Ctrl-C, and SIGTERM / SIGHUP as errors.Interrupted
            err_console.print(f"interrupted{f' ({exc})' if isinstance(exc, Interrupted) else ''}")
            ctx.exit(getattr(exc, "exit_code", 130))
        except DiskFull as exc:
            _print_error("failed:", str(exc))
            ctx.exit(exc.exit_code)
        except (typer.Exit, typer.Abort):
            raise
        except UsageError as exc:
            if BOOL_WORDS & set(re.findall(r"\w+", exc.message.partition("unexpected extra argument")[2])):
                exc.message += " (boolean options are flags and take no value: write --amp, or --no-amp)"
            raise
        except Exception as exc:  # noqa: BLE001 - the top of the program
            if STATE.debug or getattr(exc, "__module__", "").startswith(("click", "typer")):
                raise
            _print_error("failed:", f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
            if _is_oom(exc):
                err_console.print(f"hint: {OOM_HINT}", highlight=False, soft_wrap=True)
            ctx.exit(1)


app = typer.Typer(
    cls=VssGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Structured channel pruning of semantic-segmentation networks, with a lineage database.",
)


def _version(value: bool) -> None:
    if value:
        import vss_cli

        typer.echo(f"vss {vss_cli.__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    db: Annotated[str | None, typer.Option("--db", envvar="VSS_DB", help="database path or URL (default runs/vss.db)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    threads: Annotated[int | None, typer.Option("--threads", envvar="VSS_THREADS",
                                                help="CPU threads for torch (default: OMP_NUM_THREADS, else half "
                                                "the CPUs, which holds up beside other jobs)")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the vss version and exit")] = False,
) -> None:
    STATE.db, STATE.quiet, STATE.debug, STATE.threads = db, quiet, debug, threads
    configure_progress(quiet=quiet)
    apply_threads(threads)
    STATE._store = None


for _name in COMMAND_MODULES:
    importlib.import_module(f"vss_cli.cli.{_name}").register(app)


def main() -> None:
    from vss_cli.signals import install_signal_handlers

    install_signal_handlers()
    # Objects from imports live for the whole process: freezing them keeps the collector from
    # rescanning them while a command builds thousands of rows (10-20% of a 10 000-run listing).
    gc.freeze()
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
