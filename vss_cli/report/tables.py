"""Rows for `vss bench` summaries and `vss report`, shaped from the store's grid queries (no torch).

`cell_rows` reads one `CellRow` per cell of a bench (`store.grid` finds the cells and their steps);
`aggregate` folds seeds into one row per method × ratio (mean, sample std, n), the table a pruning
paper reports. Which metrics appear, and how they are labelled, comes from `report.schema.CELL_METRICS`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vss_cli.report.schema import CELL_METRICS, CellRow, aggregated
from vss_cli.report.verdict import verdict_footer, verdict_rows
from vss_cli.store import Run, Store
from vss_cli.store.grid import Grid, baseline_run_id, cell_axes, grid_cells, step_runs_many
from vss_cli.store.writes import finite

NOISY_MARK = " (noisy)"
SLOWER_MARK = " (slower than parent)"  # prune's paired check found a seed's model no faster than its parent
DISPUTED_MARK = " (disputed)"  # eval's paired timing says faster, prune's paired check said not faster


def speed_mark(speedup: float | None, noisy: bool, slower: bool) -> str:
    """What to add after a speedup: `(noisy)` when the timings spread widely; `(slower than parent)` when
    prune's paired check found the model no faster and the speedup agrees (<= 1 or unknown), but
    `(disputed)` when the speedup says faster: a row never claims both a speedup and a slowdown."""
    mark = NOISY_MARK if noisy else ""
    if slower:
        mark += DISPUTED_MARK if speedup is not None and speedup > 1 else SLOWER_MARK
    return mark


@dataclass
class BaselinePoint:
    """The unpruned model in the Pareto view: its mIoU and measured latency (means over the cells' evals)."""

    miou: float | None
    latency_ms: float | None
    run_id: str | None = None


def _id(run: Run | None) -> str | None:
    return run.id if run is not None else None


def cell_row(cell: Run, metrics: dict[str, float], steps: dict[str, Run], *, skipped: bool = False) -> CellRow:
    """The cell's axes, status, headline metrics and step run ids."""
    method, ratio, seed = cell_axes(cell)
    return CellRow(
        method=method, ratio=ratio, seed=seed, status=cell.status,
        metrics={m.name: finite(metrics.get(m.name)) for m in CELL_METRICS},
        cell_run=cell.id, prune_run=_id(steps.get("prune")), finetune_run=_id(steps.get("finetune")),
        eval_run=_id(steps.get("eval")), config_key=cell.config_key, error=cell.error, skipped=skipped,
    )


def cell_rows(store: Store, bench_id: str, *, skipped: Iterable[str] = (),
              baseline_sha: str | None = None) -> list[CellRow]:
    """One row per cell of the bench; `skipped` names the cells an invocation found done and reused.
    A fixed number of queries whatever the number of cells (metrics and steps are read in batches)."""
    skipped = set(skipped)
    cells = grid_cells(store, bench_id, baseline_sha=baseline_sha)
    ids = [cell.id for cell in cells]
    metrics = store.latest_metrics_many(ids, [m.name for m in CELL_METRICS])
    steps = step_runs_many(store, ids)
    return [cell_row(cell, metrics[cell.id], steps[cell.id], skipped=cell.id in skipped) for cell in cells]


def summary_stats(rows: Sequence[CellRow]) -> dict[str, Any]:
    """The seed's counts. `skipped` cells are completed ones that were reused, so they count as completed."""
    status = [r.status for r in rows]
    total, completed = len(rows), status.count("completed")
    stats = {
        "total_experiments": total,
        "completed": completed,
        "failed": status.count("failed"),
        "skipped": sum(r.skipped for r in rows),
        "success_rate": completed / total if total else 0.0,
    }
    unfinished = total - completed - stats["failed"]
    if unfinished:
        stats["unfinished"] = unfinished
    return stats


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def aggregate_columns() -> list[str]:
    """The columns of `aggregate`'s rows (the CSV header of `vss report`)."""
    return ["method", "ratio", "n", "failed", *(f"{m.name}_{s}" for m in aggregated() for s in ("mean", "std")),
            "noisy_speedups", "slower_than_parent", "vs_random"]


def aggregate(rows: Sequence[CellRow], grid: Grid | None = None) -> list[dict[str, Any]]:
    """One row per method × ratio over the completed seeds: `<metric>_mean`, `<metric>_std` (sample
    standard deviation; None for a single seed), `n` completed and `failed` cells, and how many of the
    completed cells' speedups the timing engine flagged as noisy."""
    grid = grid or Grid()
    groups: dict[tuple[str, float], list[CellRow]] = {}
    for row in sorted(rows, key=lambda r: grid.order(r.method, r.ratio, r.seed)):
        groups.setdefault((row.method, row.ratio), []).append(row)
    verdicts = _verdicts(rows)
    table = []
    for (method, ratio), members in groups.items():
        done = [r for r in members if r.status == "completed"]
        out: dict[str, Any] = {"method": method, "ratio": ratio, "n": len(done),
                               "failed": sum(r.status == "failed" for r in members)}
        for metric in aggregated():
            values = [v for r in done if (v := r.metric(metric.name)) is not None]
            out[f"{metric.name}_mean"], out[f"{metric.name}_std"] = _mean_std(values)
        out["noisy_speedups"] = sum(r.speed_noisy for r in done)
        out["slower_than_parent"] = sum(r.slower_than_parent for r in done)
        out["vs_random"] = verdicts.get((method, ratio))
        table.append({k: out[k] for k in aggregate_columns()})
    return table


def _verdicts(rows: Sequence[CellRow]) -> dict[tuple[str, float], str | None]:
    """`vs_random` per method × ratio over the completed cells' mIoU (`report.verdict`)."""
    cells = [{"method": r.method, "ratio": r.ratio, "miou": r.metric("miou")} for r in rows if r.status == "completed"]
    return {(v.method, v.ratio): v.vs_random for v in verdict_rows(cells)}


def verdict_note(table: Sequence[dict[str, Any]]) -> str | None:
    """The footer explaining `vs_random` when the table has one."""
    return verdict_footer() if has_verdict(table) else None


def has_verdict(table: Sequence[dict[str, Any]]) -> bool:
    """Whether any aggregated row carries a `vs_random` verdict (the report then prints its footer)."""
    return any(row.get("vs_random") for row in table)


def baseline_point(store: Store, bench: Run, rows: Sequence[CellRow]) -> BaselinePoint:
    """The baseline's mIoU and latency as the cells' evaluations measured them."""
    done = [r for r in rows if r.status == "completed"]
    miou = _mean_std([v for r in done if (v := r.metric("baseline_miou")) is not None])[0]
    latency = _mean_std([v for r in done if (v := r.metric("baseline_latency_ms")) is not None])[0]
    return BaselinePoint(miou=miou, latency_ms=latency, run_id=baseline_run_id(store, bench))


def _pm(mean: float | None, std: float | None, spec: str) -> str:
    if mean is None:
        return "—"
    return format(mean, spec) + (f" ± {format(std, spec)}" if std is not None else "")


KEY_LABELS = ("method", "ratio", "mIoU", "retention", "speedup")  # kept whole on a narrow terminal
TIMING_LABEL = "timing"


def display_rows(table: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The aggregated rows as text for people (table and markdown): `mean ± std` per metric, the key
    columns (KEY_LABELS) first; a `timing` column says when a speedup is in doubt (`speed_mark`:
    noisy in any seed; slower than its parent, or disputed)."""
    marks = [speed_mark(row["speedup_latency_mean"], bool(row.get("noisy_speedups")),
                        bool(row.get("slower_than_parent"))).replace(") (", "; ").strip(" ()") for row in table]
    out = []
    for row, mark in zip(table, marks, strict=True):
        shown = {"method": row["method"], "ratio": f"{row['ratio']:g}", "n": str(row["n"])}
        if row["failed"]:
            shown["n"] += f" ({row['failed']} failed)"
        metrics = {m.label: _pm(row[f"{m.name}_mean"], row[f"{m.name}_std"], m.spec) for m in aggregated()}
        shown.update({k: metrics.pop(k) for k in KEY_LABELS if k in metrics})
        shown.update(metrics)
        if any(marks):
            shown[TIMING_LABEL] = mark
        if has_verdict(table):
            shown["vs random"] = row.get("vs_random") or ""
        out.append(shown)
    return out
