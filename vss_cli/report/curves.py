"""Training curves from the store: the per-epoch metrics (`step` = epoch) a train or finetune run
records, as a table or a plot, and every bench cell's fine-tune curve per method. No torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vss_cli.errors import ConfigError
from vss_cli.report.tables import CellRow
from vss_cli.store import Run, Store

TRAINING_KINDS = ("train", "finetune")
# per-epoch metric -> panel title
CURVES = {"train_loss": "train loss", "val_miou": "validation mIoU", "lr": "learning rate (end of epoch)"}
BENCH_CURVES = ("val_miou", "train_loss")
PANEL_WIDTH = 4.0  # inches per panel (DPI 100: 400 pixels)
PANEL_HEIGHT = 4.0

Curve = list[tuple[int, float]]


def epoch_curves(store: Store, run_id: str) -> dict[str, Curve]:
    """Every metric the run recorded with a step, as (epoch, value) sorted by epoch (a resumed
    run's repeated epoch keeps its last value)."""
    by_key: dict[str, dict[int, float]] = {}
    for m in store.metrics(run_id):
        if m.step is not None:
            by_key.setdefault(m.key, {})[m.step] = m.value
    return {key: sorted(values.items()) for key, values in by_key.items()}


def epoch_rows(curves: dict[str, Curve]) -> list[dict]:
    """One row per epoch with every per-epoch metric (empty where not measured that epoch)."""
    epochs = sorted({step for curve in curves.values() for step, _ in curve})
    keys = [k for k in CURVES if k in curves] + sorted(k for k in curves if k not in CURVES)
    lookup = {k: dict(curves[k]) for k in keys}
    return [{"epoch": e, **{k: lookup[k].get(e) for k in keys}} for e in epochs]


def training_run(store: Store, run: Run) -> dict[str, Curve]:
    """The curves of a train or finetune run; bad input when it recorded none."""
    curves = epoch_curves(store, run.id)
    if not curves:
        raise ConfigError(f"{run.kind} run {run.id} recorded no per-epoch metrics (status {run.status}): "
                          "pass a run that trained at least one epoch")
    return curves


def _new_figure(columns: int, rows: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from vss_cli.report.plots import DPI

    fig = Figure(figsize=(max(12.0, PANEL_WIDTH * columns), PANEL_HEIGHT * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _epoch_axis(ax, label: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def plot_run_curves(run: Run, curves: dict[str, Curve], path: str | Path) -> Path:
    """Train loss, validation mIoU and learning rate per epoch, one panel each (1200 × 400 pixels)."""
    from vss_cli.report.plots import save_figure

    fig = _new_figure(3, 1)
    for ax, (key, title) in zip(fig.subplots(1, 3), CURVES.items(), strict=True):
        points = curves.get(key, [])
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3)
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        _epoch_axis(ax, "epoch")
    fig.suptitle(f"vss {run.kind} {run.id} ({run.config.get('model', '')}, {run.config.get('dataset', '')})")
    return save_figure(fig, path)


def bench_curves(store: Store, rows: Sequence[CellRow]) -> dict[str, list[tuple[CellRow, dict[str, Curve]]]]:
    """Per method, each cell with a fine-tune run and that run's curves (grid order)."""
    out: dict[str, list[tuple[CellRow, dict[str, Curve]]]] = {}
    for row in rows:
        if row.finetune_run is not None:
            curves = epoch_curves(store, row.finetune_run)
            if curves:
                out.setdefault(row.method, []).append((row, curves))
    if not out:
        raise ConfigError("no cell of this bench has a fine-tune curve (a bench with --finetune-epochs 0 has "
                          "none): plot the cells' numbers with --plot instead")
    return out


def plot_bench_curves(title: str, per_method: dict[str, list[tuple[CellRow, dict[str, Curve]]]],
                      path: str | Path) -> Path:
    """One column per method, rows validation mIoU and train loss; one line per cell (ratio, seed)."""
    from vss_cli.report.plots import save_figure

    fig = _new_figure(len(per_method), len(BENCH_CURVES))
    axes = fig.subplots(len(BENCH_CURVES), len(per_method), squeeze=False, sharey="row")
    ratios = sorted({row.ratio for cells in per_method.values() for row, _ in cells})
    colours = {r: f"C{i % 10}" for i, r in enumerate(ratios)}
    for col, (method, cells) in enumerate(per_method.items()):
        for r, key in enumerate(BENCH_CURVES):
            ax = axes[r][col]
            for row, curves in cells:
                if curves.get(key):
                    ax.plot(*zip(*curves[key], strict=True), color=colours[row.ratio], marker="o", markersize=2,
                            linestyle=("-", "--", ":", "-.")[row.seed % 4], label=f"r{row.ratio:g} s{row.seed}")
            ax.set_title(f"{method}: {CURVES[key]}", fontsize="medium")
            _epoch_axis(ax, "fine-tune epoch")
            if r == 0 and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="x-small", title="ratio, seed", title_fontsize="x-small")
    fig.suptitle(title)
    return save_figure(fig, path)
