"""Bench tables (per cell, per method × ratio), CSV/JSON/markdown rows and plots from store queries.

Imports the store and matplotlib only, never torch, so `vss report` starts fast.
"""

from vss_cli.report.tables import (
    BaselinePoint,
    CellRow,
    Grid,
    aggregate,
    baseline_point,
    cell_rows,
    display_rows,
    grid_cells,
    resolve_bench,
    step_runs,
    summary_stats,
)

__all__ = [
    "BaselinePoint",
    "CellRow",
    "Grid",
    "aggregate",
    "baseline_point",
    "cell_rows",
    "display_rows",
    "grid_cells",
    "resolve_bench",
    "step_runs",
    "summary_stats",
]
