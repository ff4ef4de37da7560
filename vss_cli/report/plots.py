"""The bench plot: mIoU retention against the pruning ratio, and the Pareto view of mIoU against cost
relative to the baseline; with per-class damage, a heat map of IoU drops below. Matplotlib's Agg
canvas, no pyplot state.

The Pareto x axis is relative, per cell, before averaging over seeds: latency is 1 / the cell's
paired `speedup_latency` (baseline and candidate timed alternately in one measurement, so machine
load cancels), MACs and params are 1 − their reduction. The baseline sits at x = 1.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vss_cli.errors import ConfigError
from vss_cli.fileio import atomic_output
from vss_cli.report.tables import BaselinePoint, CellRow, Grid

FIGSIZE = (12.0, 5.0)  # inches
HEAT_HEIGHT = 5.0  # inches added below for the per-class heat map (more for many method × ratio rows)
HEAT_ROW = 0.3  # inches per heat-map row beyond what HEAT_HEIGHT holds
DPI = 100  # so the PNG is 1200 × 500 pixels (1200 × 1000 with a heat map of up to 11 rows)


def _relative_latency(row: CellRow) -> float | None:
    speedup = row.metric("speedup_latency")
    return 1.0 / speedup if speedup else None


def _remaining(key: str) -> Callable[[CellRow], float | None]:
    def of(row: CellRow) -> float | None:
        value = row.metric(key)
        return None if value is None else 1.0 - value

    return of


# --x choice -> (the cell's cost relative to the baseline, axis label)
PARETO_X: dict[str, tuple[Callable[[CellRow], float | None], str]] = {
    "latency": (_relative_latency, "latency relative to the baseline (1 / paired speedup; baseline = 1)"),
    "macs": (_remaining("macs_reduction"), "MACs relative to the baseline (baseline = 1)"),
    "params": (_remaining("params_reduction"), "parameters relative to the baseline (baseline = 1)"),
}


@dataclass
class ParetoPoint:
    """One method × ratio over its completed seeds: mean and sample std (0 for one seed) on both axes."""

    method: str
    ratio: float
    x: float
    y: float
    x_std: float
    y_std: float
    n: int


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pareto_points(rows: Sequence[CellRow], x: str = "latency", grid: Grid | None = None) -> list[ParetoPoint]:
    """Per method × ratio, x (relative cost, see PARETO_X) and y (mIoU) from the cells that have both."""
    if x not in PARETO_X:
        raise ConfigError(f"--x {x} is unknown: use one of {', '.join(PARETO_X)}")
    x_of = PARETO_X[x][0]
    grid = grid or Grid()
    groups: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for row in sorted(rows, key=lambda r: grid.order(r.method, r.ratio, r.seed)):
        cost = x_of(row)
        if row.status == "completed" and cost is not None and row.metric("miou") is not None:
            groups.setdefault((row.method, row.ratio), []).append((cost, row.metric("miou")))
    points = []
    for (method, ratio), pairs in groups.items():
        (mx, sx), (my, sy) = _mean_std([p[0] for p in pairs]), _mean_std([p[1] for p in pairs])
        points.append(ParetoPoint(method, ratio, mx, my, sx, sy, len(pairs)))
    return points


def _series(table: Sequence[dict[str, Any]], x_key: str, y_key: str) -> dict[str, list[tuple]]:
    """Per method: (x, y, y error, ratio) points of the rows that have both values, sorted by x."""
    out: dict[str, list[tuple]] = {}
    for row in table:
        x, y = row.get(f"{x_key}_mean", row.get(x_key)), row.get(f"{y_key}_mean")
        if x is not None and y is not None:
            out.setdefault(row["method"], []).append((x, y, row.get(f"{y_key}_std") or 0.0, row["ratio"]))
    return {method: sorted(points) for method, points in out.items()}


RATIO_AXIS = {  # --budget -> what the pruning ratio counted
    "macs": "pruning ratio (share of the model's MACs removed, --budget macs)",
    "channels": "pruning ratio (share of prunable channels removed, --budget channels)",
    "latency": "pruning ratio (share of measured latency removed, --budget latency)",
}


def seeds_title(seeds: Sequence[int]) -> str:
    """What a plot's points are: `mean ± std over 3 seeds`, or `one seed (no spread)`."""
    return f"mean ± std over {len(seeds)} seeds" if len(seeds) > 1 else "one seed (no spread, no error bars)"


def _retention_panel(ax, table: Sequence[dict[str, Any]], budget: str) -> None:
    for method, points in _series(table, "ratio", "miou_retention").items():  # sorted by x
        xs, ys, errs, _ = zip(*points, strict=True)
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=method)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(RATIO_AXIS.get(budget, f"pruning ratio (--budget {budget})"))
    ax.set_ylabel("mIoU retention (candidate / baseline)")
    ax.set_title("Accuracy kept vs. pruning ratio")


def _pareto_panel(ax, points: Sequence[ParetoPoint], baseline: BaselinePoint | None, x: str, setting: str) -> None:
    by_method: dict[str, list[ParetoPoint]] = {}
    for p in points:
        by_method.setdefault(p.method, []).append(p)
    for method, group in by_method.items():
        group = sorted(group, key=lambda p: p.x)
        line = ax.errorbar([p.x for p in group], [p.y for p in group], xerr=[p.x_std for p in group],
                           yerr=[p.y_std for p in group], marker="o", capsize=3, label=method)
        for p in group:
            ax.annotate(f"{p.ratio:g}", (p.x, p.y), textcoords="offset points", xytext=(4, 4), fontsize="x-small",
                        color=line.lines[0].get_color())
    if baseline is not None and baseline.miou is not None:
        ax.scatter([1.0], [baseline.miou], marker="*", s=180, color="black", zorder=5, label="baseline (unpruned)")
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    label = PARETO_X[x][1]
    ax.set_xlabel(label + (f"\nlatency timed at {setting}" if x == "latency" and setting else ""))
    ax.set_ylabel("mIoU")
    ax.set_title(f"Accuracy vs. {x} (labels: ratio; up-left is better)")


def heat_height(rows: int) -> float:
    """Inches the heat map adds: HEAT_HEIGHT, or more so that each row stays readable."""
    return max(HEAT_HEIGHT, 1.5 + HEAT_ROW * rows)


def _heat_panel(fig, ax, heat) -> None:
    import numpy as np

    drops = np.array([[np.nan if v is None else v for v in row] for row in heat.drops], dtype=float)
    limit = float(np.nanmax(np.abs(drops))) if np.isfinite(drops).any() else 1.0
    image = ax.imshow(drops, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(heat.classes)), heat.classes, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(len(heat.rows)), heat.rows, fontsize="small")
    if drops.size <= 400:
        for (i, j), value in np.ndenumerate(drops):
            if np.isfinite(value):
                ax.text(j, i, f"{value:+.2f}", ha="center", va="center", fontsize="x-small",
                        color="white" if abs(value) > 0.6 * limit else "black")
    ax.set_title("Per-class IoU drop (baseline − candidate, mean over seeds; classes worst first)")
    fig.colorbar(image, ax=ax, label="IoU drop")


def bench_figure(table: Sequence[dict[str, Any]], rows: Sequence[CellRow], baseline: BaselinePoint | None, *,
                 title: str, x: str = "latency", latency_setting: str = "", heat=None, grid: Grid | None = None,
                 budget: str = "macs"):
    """The figure: retention from `aggregate()` rows, the Pareto panel from the cell rows, and the
    per-class heat map below when `heat` (a `per_class.HeatMap`) is given. Axes order: retention, Pareto.

    `latency_setting` says what the latency was measured on (batch, device, dtype) for the axis label;
    `budget` what the ratios counted (the retention panel's x axis). Lines join points in x order.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = pareto_points(rows, x, grid)
    height = FIGSIZE[1] + (heat_height(len(heat.rows)) if heat is not None else 0.0)
    fig = Figure(figsize=(FIGSIZE[0], height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if heat is None:
        left, right = fig.subplots(1, 2)
    else:
        axes = fig.subplot_mosaic([["left", "right"], ["heat", "heat"]])
        left, right = axes["left"], axes["right"]
    _retention_panel(left, table, budget)
    _pareto_panel(right, points, baseline, x, latency_setting)
    if heat is not None:
        _heat_panel(fig, axes["heat"], heat)
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title="method", fontsize="small")
    fig.suptitle(title)
    return fig


def plot_bench(table: Sequence[dict[str, Any]], rows: Sequence[CellRow], baseline: BaselinePoint | None,
               path: str | Path, **kwargs: Any) -> Path:
    """`bench_figure(...)` written to a PNG atomically (1200 × 500 pixels; taller with the heat map)."""
    return save_figure(bench_figure(table, rows, baseline, **kwargs), path)


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG atomically (temporary name, rename)."""
    with atomic_output(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    return Path(path)
