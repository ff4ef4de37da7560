"""Grid queries over the lineage store: a bench's axes, its cells and each cell's step runs (no torch).

A bench run links its cells (`cell-of`); a cell links the prune, finetune and eval runs that produced
it (`step-of`). The workflows orchestrate over these queries and the report shapes their rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from vss_cli.errors import ConfigError
from vss_cli.store.rows import Run
from vss_cli.store.store import Store

STEP_KINDS = ("prune", "finetune", "eval")


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


def cell_axes(cell: Run) -> tuple[str, float, int]:
    """(method, ratio, seed) of a cell run."""
    return str(cell.config["method"]), float(cell.config["ratio"]), int(cell.config["seed"])


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


def step_runs(store: Store, cell_id: str) -> dict[str, Run]:
    """The newest run of each step kind linked to the cell (`step-of`); earlier attempts are history."""
    return step_runs_many(store, [cell_id])[cell_id]


def step_runs_many(store: Store, cell_ids: Sequence[str]) -> dict[str, dict[str, Run]]:
    """`step_runs` of many cells in one query: {cell id: {step kind: newest run}}."""
    out: dict[str, dict[str, Run]] = {}
    for cell_id, children in store.children_many(cell_ids).items():
        steps = out[cell_id] = {}
        for relation, run in children:
            if relation == "step-of" and run.kind in STEP_KINDS and (run.kind not in steps or run.id > steps[run.kind].id):
                steps[run.kind] = run
    return out


def baseline_run_id(store: Store, bench: Run) -> str | None:
    """The run linked `baseline-of` the bench, if any."""
    return next((p.id for rel, p in store.parents(bench.id) if rel == "baseline-of"), None)
