"""Bench tables (per cell, per method × ratio), CSV/JSON/markdown rows and plots from store queries,
and the one definition of the evaluation report and the cell row (`report.schema`).

Imports the store and matplotlib only, never torch, so `vss report` starts fast.
"""

from vss_cli.report.schema import CELL_METRICS, CellMetric, CellRow, EvalReport, PruningRatios
from vss_cli.report.tables import (
    BaselinePoint,
    aggregate,
    aggregate_columns,
    baseline_point,
    cell_rows,
    display_rows,
    summary_stats,
)

__all__ = [
    "CELL_METRICS",
    "BaselinePoint",
    "CellMetric",
    "CellRow",
    "EvalReport",
    "PruningRatios",
    "aggregate",
    "aggregate_columns",
    "baseline_point",
    "cell_rows",
    "display_rows",
    "summary_stats",
]
