"""`vss report`: a bench as one row per method × ratio (mean ± std over seeds), its per-class damage
and plots; a train or finetune run as its per-epoch curves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vss_cli.cli.output import console, err_console, render_rows
from vss_cli.cli.state import STATE
from vss_cli.errors import ConfigError

FORMATS = ("table", "csv", "json", "markdown")

RunRef = Annotated[str, typer.Argument(help="bench run id (or unique prefix) or `latest`; or a train/finetune run")]
Format = Annotated[str, typer.Option("--format", help="table, csv, json or markdown")]
Plot = Annotated[Path | None, typer.Option("--plot", help="draw to this PNG: for a bench retention vs ratio and "
                                           "mIoU vs relative cost; for a train/finetune run its curves")]
PerClass = Annotated[bool, typer.Option("--per-class", help="per-class IoU of the baseline and each method × ratio, "
                                        "and the drop, worst classes first (adds a heat map to --plot)")]
XAxis = Annotated[str, typer.Option("--x", help="Pareto x axis relative to the baseline: latency (1 / paired "
                                    "speedup), macs or params")]
Curves = Annotated[Path | None, typer.Option("--curves", help="draw every cell's fine-tune curve per method to "
                                             "this PNG")]


def _timing_setting(run) -> str:
    timing = run.config.get("eval", {})
    parts = (f"batch {timing['batch_size']}" if "batch_size" in timing else None, timing.get("device"),
             timing.get("dtype"))
    return ", ".join(str(v) for v in parts if v)


def _bench(store, run, fmt: str, plot: Path | None, per_class: bool, x: str, curves: Path | None) -> None:
    from vss_cli.report import aggregate, baseline_point, cell_rows, display_rows
    from vss_cli.report import per_class as pc
    from vss_cli.report.plots import PARETO_X, plot_bench, seeds_title
    from vss_cli.report.tables import KEY_LABELS, verdict_note
    from vss_cli.store.grid import Grid

    if x not in PARETO_X:
        raise ConfigError(f"--x {x} is unknown: use one of {', '.join(PARETO_X)}")
    grid = Grid.of(run)
    rows = cell_rows(store, run.id)
    damage = pc.class_damage(store, rows) if per_class else None
    table = aggregate(rows, grid)
    title = f"vss bench {run.id} ({len(rows)} cells)"
    if damage is not None:
        shown = [d.to_dict() for d in damage] if fmt in ("csv", "json") else pc.display_rows(damage)
        render_rows(shown, fmt, title=title + ": per-class IoU")
    elif fmt in ("csv", "json"):
        render_rows(table, fmt)
    else:
        render_rows(display_rows(table), fmt, title=title, keep=KEY_LABELS)
        note = verdict_note(table)
        if note is not None and fmt == "markdown":
            print(f"\n{note}")
        elif note is not None:
            console.print(note, highlight=False)
        if fmt == "table":
            _answer(run, rows)
    if plot is not None:
        heat = pc.heat_map(damage) if damage is not None else None
        path = plot_bench(table, rows, baseline_point(store, run, rows), plot, x=x, heat=heat, grid=grid,
                          title=f"vss bench {run.id} ({run.name or 'grid'}): {seeds_title(grid.seeds)}",
                          latency_setting=_timing_setting(run), budget=run.config.get("prune", {}).get("budget", "macs"))
        err_console.print(f"plot -> {path}", highlight=False)
    if curves is not None:
        from vss_cli.report.curves import bench_curves, plot_bench_curves

        path = plot_bench_curves(f"vss bench {run.id}: fine-tune curves per method", bench_curves(store, rows), curves)
        err_console.print(f"curves -> {path}", highlight=False)


def _answer(run, rows) -> None:
    """The closing lines `vss bench` printed: which method kept more mIoU at each cost (report.answer)."""
    from vss_cli.report.answer import answer

    config = run.config
    found = answer(rows, budget=config.get("prune", {}).get("budget", "macs"),
                   finetune_epochs=config.get("finetune", {}).get("epochs"))
    for line in found.lines:
        console.print(line, highlight=False, markup=False)


def _training(store, run, fmt: str, plot: Path | None, curves: Path | None) -> None:
    from vss_cli.report.curves import epoch_rows, plot_run_curves, training_run

    found = training_run(store, run)
    render_rows(epoch_rows(found), fmt, title=f"vss {run.kind} {run.id}: per-epoch metrics")
    for path in dict.fromkeys(p for p in (plot, curves) if p is not None):
        err_console.print(f"curves -> {plot_run_curves(run, found, path)}", highlight=False)


def report(ref: RunRef = "latest", fmt: Format = "table", plot: Plot = None, per_class: PerClass = False,
           x: XAxis = "latency", curves: Curves = None) -> None:
    """Aggregate a bench's cells over seeds (mIoU, retention, MACs/params reduction, latency speedup),
    or show a train/finetune run's per-epoch curves."""
    from vss_cli.report.curves import TRAINING_KINDS
    from vss_cli.store.grid import resolve_bench

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt} is not supported: use one of {', '.join(FORMATS)}")
    store = STATE.store()
    run = store.get_run(ref) if ref not in ("", "latest") else None
    if run is not None and run.kind in TRAINING_KINDS:
        if per_class:
            raise ConfigError(f"--per-class needs a bench run, and {run.id} is a {run.kind} run: pass a bench id")
        _training(store, run, fmt, plot, curves)
        return
    _bench(store, resolve_bench(store, run.id if run else ref), fmt, plot, per_class, x, curves)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
