"""The bench plot: mIoU retention against the pruning ratio, and mIoU against measured latency (the
Pareto view, with the unpruned baseline as a reference point). Matplotlib's Agg canvas, no pyplot state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vss_cli.fileio import atomic_output
from vss_cli.report.tables import BaselinePoint

FIGSIZE = (12.0, 5.0)  # inches
DPI = 100  # so the PNG is 1200 × 500 pixels


def _series(table: Sequence[dict[str, Any]], x_key: str, y_key: str) -> dict[str, list[tuple]]:
    """Per method: (x, y, y error, ratio) points of the rows that have both values, sorted by x."""
    out: dict[str, list[tuple]] = {}
    for row in table:
        x, y = row.get(f"{x_key}_mean", row.get(x_key)), row.get(f"{y_key}_mean")
        if x is not None and y is not None:
            out.setdefault(row["method"], []).append((x, y, row.get(f"{y_key}_std") or 0.0, row["ratio"]))
    return {method: sorted(points) for method, points in out.items()}


def _draw(ax, series: dict[str, list[tuple]], *, label_ratios: bool) -> None:
    for method, points in series.items():
        xs, ys, errs, ratios = zip(*points, strict=True)
        line = ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=method)
        if label_ratios:
            for x, y, ratio in zip(xs, ys, ratios, strict=True):
                ax.annotate(f"{ratio:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small",
                            color=line.lines[0].get_color())


def _retention_panel(ax, table: Sequence[dict[str, Any]]) -> None:
    _draw(ax, _series(table, "ratio", "miou_retention"), label_ratios=False)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("pruning ratio (fraction of prunable channels removed)")
    ax.set_ylabel("mIoU retention (candidate / baseline)")
    ax.set_title("Accuracy kept vs. pruning ratio")


def _pareto_panel(ax, table: Sequence[dict[str, Any]], baseline: BaselinePoint | None, setting: str) -> None:
    _draw(ax, _series(table, "candidate_latency_ms", "miou"), label_ratios=True)
    if baseline is not None and baseline.miou is not None and baseline.latency_ms is not None:
        ax.scatter([baseline.latency_ms], [baseline.miou], marker="*", s=180, color="black", zorder=5,
                   label="baseline (unpruned)")
    ax.set_xlabel("measured latency per batch (ms, median" + (f"; {setting}" if setting else "") + ")")
    ax.set_ylabel("mIoU")
    ax.set_title("Accuracy vs. latency (labels: ratio; up-left is better)")


def plot_bench(table: Sequence[dict[str, Any]], baseline: BaselinePoint | None, path: str | Path, *,
               title: str, latency_setting: str = "") -> Path:
    """Draw both panels from `aggregate()` rows and write the PNG atomically (temporary name, rename).

    `latency_setting` says what the latency was measured on (batch, device, dtype) for the axis label.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    _retention_panel(left, table)
    _pareto_panel(right, table, baseline, latency_setting)
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title="method", fontsize="small")
    fig.suptitle(title)
    with atomic_output(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    return Path(path)
