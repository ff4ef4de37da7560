"""Typed Python access to a vss lineage database, for notebooks and analysis scripts (docs/analysis.md).

    from vss_cli import lineage

    db = lineage.open("runs/vss.db")                 # a path, or a URL such as postgresql+psycopg://...
    cells = db.cells("latest")                       # the newest grid, one CellRow per cell (`vss report`'s rows)
    l1 = db.runs(kind="cell", method="l1", ratio=0.5, status="completed")
    db.metrics(l1[0])                                # {key: latest value}
    db.history(l1[0].id, "val_miou")                 # every appended value of one key, with its step
    db.ancestors(l1[0])                              # what it came from, nearest first
    lineage.to_pandas(cells)                         # a DataFrame, when pandas is installed

Rows are the store's own read models (`vss_cli.store.Run`, `Metric`: SQLModel models over the table
definitions) and the report's `CellRow`, read through the same `Store` queries the CLI uses, so a notebook
and `vss report` / `vss runs list` see the same rows. It imports no torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from vss_cli.report.schema import CellRow
from vss_cli.report.tables import aggregate, cell_rows
from vss_cli.store import LineageNode, Metric, Run, Store
from vss_cli.store.grid import Grid, resolve_bench
from vss_cli.store.queries import RunFilter

RunRef = Run | str  # a run, or its id / unique id prefix

__all__ = ["CellRow", "Hop", "LineageDB", "Metric", "Run", "open", "to_pandas"]


@dataclass(frozen=True)
class Hop:
    """A run reached while walking the lineage: `depth` edges away, linked by `relation` to run `of` (the
    child it is an ancestor of, or the parent it descends from)."""

    depth: int
    relation: str
    run: Run
    of: str

    def to_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "relation": self.relation, "of": self.of, **self.run.to_dict()}


def _flatten(nodes: tuple[LineageNode, ...], start: str) -> list[Hop]:
    """Breadth-first, nearest first; a run reached along two paths is listed once, at its first depth."""
    hops, seen = [], {start}
    level = [(start, n) for n in nodes]
    depth = 1
    while level:
        following = []
        for of, node in level:
            if node.run.id not in seen:
                seen.add(node.run.id)
                hops.append(Hop(depth, node.relation, node.run, of))
                following += [(node.run.id, child) for child in node.nodes]
        level, depth = following, depth + 1
    return hops


class LineageDB:
    """A lineage database opened for reading (see the module docstring). Every method is one or a few
    short read transactions; the rows are detached and frozen."""

    def __init__(self, store: Store) -> None:
        self.store = store  # the full `Store` API, for anything not wrapped here

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> LineageDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _id(self, run: RunRef) -> str:
        return run.id if isinstance(run, Run) else self.store.get_run(run).id

    def run(self, ref: str) -> Run:
        """The run with this id, or the only run whose id starts with `ref`."""
        return self.store.get_run(ref)

    def runs(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        method: str | None = None,
        ratio: float | None = None,
        seed: int | None = None,
        grid: str | None = None,
        where: Mapping[str, Any] | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        """Runs, newest first, matching every filter given (what `vss runs list` selects).

        `method`, `ratio` and `seed` match the config keys of those names, as a grid's cells record them
        (a prune run records its ratio as `global_ratio`: pass `where={"global_ratio": 0.5}`); numbers
        match by value (0.5 == 0.50). `grid` is a bench id (or `latest`): the bench, its cells and their
        step runs. `where` matches any dotted config key, e.g. `{"finetune.epochs": 3}`."""
        pairs = {"method": method, "ratio": ratio, "seed": seed, **(where or {})}
        flt = RunFilter(kind=kind, status=status, since=since, limit=limit,
                        bench=resolve_bench(self.store, grid).id if grid is not None else None,
                        where=tuple((key, _as_text(value)) for key, value in pairs.items() if value is not None))
        return [item.run for item in self.store.overview(flt, metric_keys=())]

    def grids(self) -> list[Run]:
        """Every bench run (a grid), newest first."""
        return self.store.list_runs(kind="bench")

    def cells(self, grid: str = "latest") -> list[CellRow]:
        """One `CellRow` per cell of the grid (a bench id or `latest`), in grid order: axes, status, every
        report metric (`CellRow.metrics`, keys of `report.schema.CELL_METRICS`) and its step runs. The rows
        `vss report` aggregates; `CellRow.to_dict()` is the summary file's row."""
        return cell_rows(self.store, resolve_bench(self.store, grid).id)

    def summary(self, grid: str = "latest") -> list[dict[str, Any]]:
        """The grid as `vss report --format json` prints it: one row per method × ratio, mean and sample
        std over seeds, failed counts and the verdict against random."""
        bench = resolve_bench(self.store, grid)
        return aggregate(cell_rows(self.store, bench.id), Grid.of(bench))

    def metrics(self, run: RunRef) -> dict[str, float]:
        """The run's metrics: the last appended value of each key."""
        return self.store.latest_metrics(self._id(run))

    def history(self, run: RunRef, key: str) -> list[Metric]:
        """Every value appended for `key` (e.g. `val_miou` per epoch: `Metric.step`), oldest first."""
        return self.store.metrics(self._id(run), key)

    def ancestors(self, run: RunRef, *, max_depth: int = 16) -> list[Hop]:
        """The runs this one was made from (parents, their parents, ...), nearest first."""
        run_id = self._id(run)
        return _flatten(self.store.lineage(run_id, max_depth=max_depth).ancestors, run_id)

    def descendants(self, run: RunRef, *, max_depth: int = 16) -> list[Hop]:
        """The runs made from this one (children, their children, ...), nearest first."""
        run_id = self._id(run)
        return _flatten(self.store.lineage(run_id, max_depth=max_depth).descendants, run_id)


def _as_text(value: Any) -> str:
    """A filter value as `RunFilter.where` takes it: strings as they are, anything else as JSON text."""
    return value if isinstance(value, str) else json.dumps(value)


def open(url_or_path: str | Path) -> LineageDB:  # shadows the builtin here only: read as `lineage.open`
    """Open the lineage database at a path (SQLite) or SQLAlchemy URL; migrates it if it is older."""
    return LineageDB(Store(url_or_path))


def to_pandas(rows: Iterable[Any]) -> Any:
    """A pandas DataFrame with one row per item (`Run`, `Metric`, `CellRow`, `Hop`: their `to_dict()`;
    mappings as they are). pandas is not a dependency of vss: install it to use this."""
    try:
        import pandas
    except ModuleNotFoundError:
        raise ModuleNotFoundError("lineage.to_pandas needs pandas, which vss does not install: "
                                  "pip install pandas") from None
    records = [row if isinstance(row, Mapping) else row.to_dict() for row in rows]
    return pandas.DataFrame.from_records(records)

