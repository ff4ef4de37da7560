"""Rows for `vss bench` summaries and `vss report`, built from lineage-store queries (no torch).

A bench run links its cells (`cell-of`); a cell links the prune, finetune and eval runs that produced
it (`step-of`) and carries the headline numbers as metrics. `cell_rows` reads one row per cell;
`aggregate` folds seeds into one row per method × ratio (mean, sample std, n), the table a pruning
paper reports.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vss_cli.errors import ConfigError
from vss_cli.store import Run, Store

STEP_KINDS = ("prune", "finetune", "eval")
# cell metric key -> what the summary and report call it
CELL_METRICS = (
    "miou", "miou_retention", "speedup_latency", "channel_reduction", "macs_reduction", "params_reduction",
    "baseline_miou", "baseline_latency_ms", "candidate_latency_ms",
)  # fmt: skip
# metrics averaged over seeds in the report, in column order
AGGREGATED = ("miou", "miou_retention", "macs_reduction", "params_reduction", "channel_reduction",
              "speedup_latency", "candidate_latency_ms")
LABELS = {
    "miou": "mIoU",
    "miou_retention": "retention",
    "macs_reduction": "MACs ↓",
    "params_reduction": "params ↓",
    "channel_reduction": "channels ↓",
    "speedup_latency": "speedup",
    "candidate_latency_ms": "latency ms",
}


@dataclass
class CellRow:
    """One grid cell as the summary file lists it (keys follow the seed's `benchmark_summary.json`)."""

    method: str
    ratio: float
    seed: int
    status: str
    miou: float | None = None
    miou_retention: float | None = None
    speedup_latency: float | None = None
    channel_reduction: float | None = None
    macs_reduction: float | None = None
    params_reduction: float | None = None
    baseline_miou: float | None = None
    baseline_latency_ms: float | None = None
    candidate_latency_ms: float | None = None
    cell_run: str = ""
    prune_run: str | None = None
    finetune_run: str | None = None
    eval_run: str | None = None
    config_key: str = ""
    error: str | None = None
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BaselinePoint:
    """The unpruned model in the Pareto view: its mIoU and measured latency (means over the cells' evals)."""

    miou: float | None
    latency_ms: float | None
    run_id: str | None = None


@dataclass
class Grid:
    """The bench's axes, in the order the user gave them (rows are sorted by it)."""

    methods: list[str] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, bench: Run) -> Grid:
        grid = bench.config.get("grid", {})
        return cls(list(grid.get("methods", [])), list(grid.get("ratios", [])), list(grid.get("seeds", [])))

    def order(self, method: str, ratio: float, seed: int) -> tuple:
        def pos(values: Sequence, value) -> int:
            return values.index(value) if value in values else len(values)

        return pos(self.methods, method), method, pos(self.ratios, ratio), ratio, pos(self.seeds, seed), seed


def resolve_bench(store: Store, ref: str | None) -> Run:
    """`latest` (or nothing) is the newest bench run; otherwise a bench run id or unique prefix."""
    if ref in (None, "", "latest"):
        found = store.list_runs(kind="bench", limit=1)
        if not found:
            raise ConfigError("the database holds no bench run yet: run `vss bench` first (or pass --db)")
        return found[0]
    run = store.get_run(ref)
    if run.kind != "bench":
        raise ConfigError(f"run {run.id} is a {run.kind} run, not a bench: pass a bench id (`vss runs list --kind bench`)")
    return run


def current_baseline_sha(store: Store, bench: Run) -> str | None:
    """sha256 of the checkpoint the bench's cells are pruned from: the given one, else the newest
    linked (`baseline-of`) baseline run's checkpoint; None when there is none yet."""
    given = bench.config.get("baseline", {}).get("checkpoint_sha256")
    if given:
        return given
    linked = sorted((p for rel, p in store.parents(bench.id) if rel == "baseline-of"), key=lambda r: r.id)
    for run in reversed(linked):
        checkpoints = store.artifacts(run.id, "checkpoint")
        if checkpoints:
            return checkpoints[-1].sha256
    return None


def grid_cells(store: Store, bench_id: str, *, baseline_sha: str | None = None) -> list[Run]:
    """The bench's cell runs (linked `cell-of`), one per config key, in grid order; only the cells of
    the bench's current baseline (a baseline trained again gives new cells)."""
    bench = store.get_run(bench_id)
    baseline_sha = baseline_sha or current_baseline_sha(store, bench)
    by_key: dict[str, Run] = {}
    for relation, run in store.children(bench.id):
        if relation != "cell-of" or run.kind != "cell":
            continue
        if baseline_sha is None or run.config.get("baseline_sha256") == baseline_sha:
            held = by_key.get(run.config_key)
            if held is None or (held.status != "completed" and run.status == "completed"):
                by_key[run.config_key] = run
    grid = Grid.of(bench)
    return sorted(by_key.values(), key=lambda r: grid.order(*cell_axes(r)))


def cell_axes(cell: Run) -> tuple[str, float, int]:
    """(method, ratio, seed) of a cell run."""
    return str(cell.config["method"]), float(cell.config["ratio"]), int(cell.config["seed"])


def step_runs(store: Store, cell_id: str) -> dict[str, Run]:
    """The newest run of each step kind linked to the cell (`step-of`); earlier attempts are history."""
    steps: dict[str, Run] = {}
    for relation, run in store.children(cell_id):
        if relation == "step-of" and run.kind in STEP_KINDS and (run.kind not in steps or run.id > steps[run.kind].id):
            steps[run.kind] = run
    return steps


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def cell_row(store: Store, cell: Run, *, skipped: bool = False) -> CellRow:
    """The cell's axes, status, headline metrics and step run ids."""
    method, ratio, seed = cell_axes(cell)
    metrics = store.latest_metrics(cell.id)
    steps = step_runs(store, cell.id)
    return CellRow(
        method=method, ratio=ratio, seed=seed, status=cell.status,
        **{key: _finite(metrics.get(key)) for key in CELL_METRICS},
        cell_run=cell.id, prune_run=_id(steps.get("prune")), finetune_run=_id(steps.get("finetune")),
        eval_run=_id(steps.get("eval")), config_key=cell.config_key, error=cell.error, skipped=skipped,
    )


def _id(run: Run | None) -> str | None:
    return run.id if run is not None else None


def cell_rows(store: Store, bench_id: str, *, skipped: Iterable[str] = (),
              baseline_sha: str | None = None) -> list[CellRow]:
    """One row per cell of the bench; `skipped` names the cells an invocation found done and reused."""
    skipped = set(skipped)
    cells = grid_cells(store, bench_id, baseline_sha=baseline_sha)
    return [cell_row(store, cell, skipped=cell.id in skipped) for cell in cells]


def summary_stats(rows: Sequence[CellRow | dict]) -> dict[str, Any]:
    """The seed's counts. `skipped` cells are completed ones that were reused, so they count as completed."""
    status = [_get(r, "status") for r in rows]
    total, completed = len(rows), status.count("completed")
    stats = {
        "total_experiments": total,
        "completed": completed,
        "failed": status.count("failed"),
        "skipped": sum(bool(_get(r, "skipped")) for r in rows),
        "success_rate": completed / total if total else 0.0,
    }
    unfinished = total - completed - stats["failed"]
    if unfinished:
        stats["unfinished"] = unfinished
    return stats


def _get(row: CellRow | dict, key: str) -> Any:
    return row.get(key) if isinstance(row, dict) else getattr(row, key)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def aggregate(rows: Sequence[CellRow], grid: Grid | None = None) -> list[dict[str, Any]]:
    """One row per method × ratio over the completed seeds: `<metric>_mean`, `<metric>_std` (sample
    standard deviation; None for a single seed), `n` completed and `failed` cells."""
    grid = grid or Grid()
    groups: dict[tuple[str, float], list[CellRow]] = {}
    for row in sorted(rows, key=lambda r: grid.order(r.method, r.ratio, r.seed)):
        groups.setdefault((row.method, row.ratio), []).append(row)
    table = []
    for (method, ratio), members in groups.items():
        done = [r for r in members if r.status == "completed"]
        out: dict[str, Any] = {"method": method, "ratio": ratio, "n": len(done),
                               "failed": sum(r.status == "failed" for r in members)}
        for key in AGGREGATED:
            values = [v for r in done if (v := getattr(r, key)) is not None]
            out[f"{key}_mean"], out[f"{key}_std"] = _mean_std(values)
        table.append(out)
    return table


def baseline_point(store: Store, bench: Run, rows: Sequence[CellRow]) -> BaselinePoint:
    """The baseline's mIoU and latency as the cells' evaluations measured them."""
    done = [r for r in rows if r.status == "completed"]
    miou = _mean_std([r.baseline_miou for r in done if r.baseline_miou is not None])[0]
    latency = _mean_std([r.baseline_latency_ms for r in done if r.baseline_latency_ms is not None])[0]
    run_id = next((p.id for rel, p in store.parents(bench.id) if rel == "baseline-of"), None)
    return BaselinePoint(miou=miou, latency_ms=latency, run_id=run_id)


def _pm(mean: float | None, std: float | None, spec: str) -> str:
    if mean is None:
        return "—"
    return format(mean, spec) + (f" ± {format(std, spec)}" if std is not None else "")


def display_rows(table: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The aggregated rows as text for people (table and markdown): `mean ± std` per metric."""
    specs = {"miou": ".4f", "miou_retention": ".3f", "macs_reduction": ".1%", "params_reduction": ".1%",
             "channel_reduction": ".1%", "speedup_latency": ".2f", "candidate_latency_ms": ".2f"}
    out = []
    for row in table:
        shown = {"method": row["method"], "ratio": f"{row['ratio']:g}", "n": str(row["n"])}
        if row["failed"]:
            shown["n"] += f" ({row['failed']} failed)"
        for key, spec in specs.items():
            shown[LABELS[key]] = _pm(row[f"{key}_mean"], row[f"{key}_std"], spec)
        out.append(shown)
    return out
