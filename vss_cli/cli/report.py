"""`vss report`: a bench as one row per method × ratio (mean ± std over seeds), and its plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vss_cli.cli.output import err_console, render_rows
from vss_cli.cli.state import STATE
from vss_cli.errors import ConfigError

FORMATS = ("table", "csv", "json", "markdown")

BenchRef = Annotated[str, typer.Argument(help="bench run id (or unique prefix), or `latest`")]
Format = Annotated[str, typer.Option("--format", help="table, csv, json or markdown")]
Plot = Annotated[Path | None, typer.Option("--plot", help="also draw retention vs ratio and mIoU vs latency "
                                           "to this PNG")]


def report(bench: BenchRef = "latest", fmt: Format = "table", plot: Plot = None) -> None:
    """Aggregate a bench's cells over seeds: mIoU, retention, MACs/params reduction, latency speedup."""
    from vss_cli.report import aggregate, baseline_point, cell_rows, display_rows
    from vss_cli.store.grid import Grid, resolve_bench

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt} is not supported: use one of {', '.join(FORMATS)}")
    store = STATE.store()
    run = resolve_bench(store, bench)
    rows = cell_rows(store, run.id)
    table = aggregate(rows, Grid.of(run))
    if fmt in ("csv", "json"):
        render_rows(table, fmt)
    else:
        render_rows(display_rows(table), fmt, title=f"vss bench {run.id} ({len(rows)} cells)")
    if plot is not None:
        from vss_cli.report.plots import plot_bench

        title = f"vss bench {run.id} ({run.name or 'grid'}): mean ± std over seeds"
        timing = run.config.get("eval", {})
        setting = ", ".join(str(v) for v in (f"batch {timing['batch_size']}" if "batch_size" in timing else None,
                                             timing.get("device"), timing.get("dtype")) if v)
        path = plot_bench(table, baseline_point(store, run, rows), plot, title=title, latency_setting=setting)
        err_console.print(f"plot -> {path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
