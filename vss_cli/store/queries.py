"""Batch reads of the lineage store: a fixed number of SQL statements whatever the number of rows.

Listing and lineage never query per row: parents, children, latest metrics and artifacts of many runs
come from one statement per batch of up to `BATCH` ids (`IN (...)`), and a lineage tree from one
statement per level. Config filters (`--where`, `--method`, ...) are applied to the decoded configs,
so they work the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any

from sqlalchemy import ARRAY, Connection, String, and_, any_, bindparam, func, or_, select

from vss_cli.store.rows import STALE_AFTER_S, Artifact, LineageNode, Run
from vss_cli.store.tables import ARTIFACT, EDGE, METRIC, RUN

BATCH = 10_000  # ids per IN (...) list: under SQLite's 32 766 and PostgreSQL's 65 535 parameters
STALE = "stale"  # a display status: running, but the heartbeat is older than the grace period

Adjacency = dict[str, list[tuple[str, Run]]]

def chunks(ids: Sequence[str], size: int = BATCH) -> Iterator[list[str]]:
    """`ids` without repeats, in lists of at most `size`."""
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


@dataclass(frozen=True)
class RunFilter:
    """What `runs list` selects. `where` holds (dotted config key, value) pairs; a value matches
    when it equals the config value's text or JSON form (`seed=0`, `method=l1`, `amp=true`)."""

    kind: str | None = None
    status: str | None = None
    config_key: str | None = None
    since: datetime | None = None
    parent: str | None = None
    bench: str | None = None
    where: tuple[tuple[str, str], ...] = ()
    limit: int | None = None
    stale_after_s: float = STALE_AFTER_S

    def conditions(self, now: datetime) -> list[Any]:
        """SQL conditions for everything but `where`."""
        conds: list[Any] = []
        stale_before = now - timedelta(seconds=self.stale_after_s)
        is_stale = and_(RUN.c.status == "running", RUN.c.heartbeat_at < stale_before)
        if self.status == STALE:
            conds.append(is_stale)
        elif self.status == "running":
            conds.append(and_(RUN.c.status == "running", or_(RUN.c.heartbeat_at.is_(None),
                                                                  RUN.c.heartbeat_at >= stale_before)))
        elif self.status is not None:
            conds.append(RUN.c.status == self.status)
        for column, value in ((RUN.c.kind, self.kind), (RUN.c.config_key, self.config_key)):
            if value is not None:
                conds.append(column == value)
        if self.since is not None:
            conds.append(RUN.c.created_at >= self.since)
        if self.parent is not None:
            conds.append(RUN.c.id.in_(select(EDGE.c.child_id).where(EDGE.c.parent_id == self.parent)))
        if self.bench is not None:
            conds.append(or_(RUN.c.id == self.bench, RUN.c.id.in_(_grid_members(self.bench))))
        return conds


def _grid_members(bench_id: str):
    """Ids of a bench's cells (`cell-of`) and of their steps (`step-of`)."""
    cell_edge, step_edge = EDGE.alias("cell_edge"), EDGE.alias("step_edge")
    cells = select(cell_edge.c.child_id).where(cell_edge.c.parent_id == bench_id, cell_edge.c.relation == "cell-of")
    steps = (
        select(step_edge.c.child_id)
        .join(cell_edge, cell_edge.c.child_id == step_edge.c.parent_id)
        .where(cell_edge.c.parent_id == bench_id, cell_edge.c.relation == "cell-of", step_edge.c.relation == "step-of")
    )
    return cells.union(steps)


def _config_value(config: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def config_matches(config: dict[str, Any], key: str, wanted: str) -> bool:
    """True when the config's value at dotted `key` is `wanted` as text, as JSON, or as the same number."""
    found, value = _config_value(config, key)
    if not found:
        return False
    if isinstance(value, str):
        return value == wanted
    try:
        parsed = json.loads(wanted)
    except ValueError:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return isinstance(parsed, (int, float)) and not isinstance(parsed, bool) and float(parsed) == float(value)
    return parsed == value


def select_runs(conn: Connection, flt: RunFilter) -> list[Run]:
    """Runs matching `flt`, newest first (one statement)."""
    query = select(RUN).where(*flt.conditions(datetime.now(timezone.utc)))
    query = query.order_by(RUN.c.created_at.desc(), RUN.c.id.desc())
    if not flt.where:
        return [Run.from_row(r) for r in conn.execute(query.limit(flt.limit)).all()]
    runs = []
    for rec in conn.execute(query).all():
        run = Run.from_row(rec)
        if all(config_matches(run.config, key, value) for key, value in flt.where):
            runs.append(run)
            if flt.limit is not None and len(runs) >= flt.limit:
                break
    return runs


def count_runs(conn: Connection, flt: RunFilter) -> int:
    """How many runs match `flt` without its limit (what `runs list` shows N of)."""
    from dataclasses import replace

    if flt.where:
        return len(select_runs(conn, replace(flt, limit=None)))
    query = select(func.count()).select_from(RUN).where(*flt.conditions(datetime.now(timezone.utc)))
    return int(conn.execute(query).scalar_one())


IDS = bindparam("ids", expanding=True)
ID_ARRAY = bindparam("ids", type_=ARRAY(String))
KEYS = bindparam("keys", expanding=True)


def _among_ids(column: Any, dialect: str) -> Any:
    """`column IN :ids`. On PostgreSQL `column = ANY(:ids)` with one array parameter: a batch of 10 000
    ids is then one value to send and plan, not 10 000 (a 10 000-run listing's parents and metrics come
    back 2-4x sooner); elsewhere an expanding IN list."""
    return column == any_(ID_ARRAY) if dialect == "postgresql" else column.in_(IDS)


@cache
def _edge_ids_query(upward: bool, dialect: str):
    mine, other = (EDGE.c.child_id, EDGE.c.parent_id) if upward else (EDGE.c.parent_id, EDGE.c.child_id)
    return select(mine, EDGE.c.relation, other).where(_among_ids(mine, dialect)).order_by(EDGE.c.id)


@cache
def _neighbours_query(upward: bool, dialect: str):
    mine, other = (EDGE.c.child_id, EDGE.c.parent_id) if upward else (EDGE.c.parent_id, EDGE.c.child_id)
    query = select(mine, EDGE.c.relation, RUN).join(RUN, RUN.c.id == other)
    return query.where(_among_ids(mine, dialect)).order_by(EDGE.c.id)


@cache
def _latest_metrics_query(with_keys: bool, dialect: str):
    """(run id, key, value) of each run's last row per key, in the order they were appended. SQLite
    finds each last id on the (run_id, key, id) index; PostgreSQL's `DISTINCT ON` takes one sort
    instead of a join back by id (half the time for 10 000 runs)."""
    among = [_among_ids(METRIC.c.run_id, dialect), *([METRIC.c.key.in_(KEYS)] if with_keys else [])]
    if dialect == "postgresql":
        last = (select(METRIC.c.run_id, METRIC.c.key, METRIC.c.value, METRIC.c.id).where(*among)
                .distinct(METRIC.c.run_id, METRIC.c.key)
                .order_by(METRIC.c.run_id, METRIC.c.key, METRIC.c.id.desc())).subquery()
        return select(last.c.run_id, last.c.key, last.c.value).order_by(last.c.id)
    last_ids = select(func.max(METRIC.c.id)).where(*among).group_by(METRIC.c.run_id, METRIC.c.key)
    return select(METRIC.c.run_id, METRIC.c.key, METRIC.c.value).where(METRIC.c.id.in_(last_ids)).order_by(METRIC.c.id)


@cache
def _artifacts_query(dialect: str):
    return select(ARTIFACT).where(_among_ids(ARTIFACT.c.run_id, dialect)).order_by(ARTIFACT.c.id)


def edge_ids(conn: Connection, ids: Sequence[str], *, upward: bool) -> dict[str, list[tuple[str, str]]]:
    """{run id: [(relation, parent id)]} (or children with upward=False), in the order edges were added."""
    out: dict[str, list[tuple[str, str]]] = {run_id: [] for run_id in ids}
    for batch in chunks(ids):
        for run_id, relation, other_id in conn.execute(_edge_ids_query(upward, conn.dialect.name), {"ids": batch}).all():
            out[run_id].append((relation, other_id))
    return out


def neighbours(conn: Connection, ids: Sequence[str], *, upward: bool) -> Adjacency:
    """{run id: [(relation, parent run)]} (children with upward=False), one statement per batch."""
    out: Adjacency = {run_id: [] for run_id in ids}
    for batch in chunks(ids):
        for row in conn.execute(_neighbours_query(upward, conn.dialect.name), {"ids": batch}).all():
            out[row[0]].append((row.relation, Run.from_row(row[2:])))
    return out


def latest_metrics(conn: Connection, ids: Sequence[str], keys: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """{run id: {key: last appended value}}, optionally only `keys`; one statement per batch."""
    out: dict[str, dict[str, float]] = {run_id: {} for run_id in ids}
    query = _latest_metrics_query(keys is not None, conn.dialect.name)
    for batch in chunks(ids):
        params = {"ids": batch, **({"keys": list(keys)} if keys is not None else {})}
        for run_id, key, value in conn.execute(query, params).all():
            out[run_id][key] = value
    return out


def artifacts_of(conn: Connection, ids: Sequence[str]) -> dict[str, list[Artifact]]:
    """{run id: [artifact, ...]} in the order they were recorded; one statement per batch."""
    out: dict[str, list[Artifact]] = {run_id: [] for run_id in ids}
    for batch in chunks(ids):
        for rec in conn.execute(_artifacts_query(conn.dialect.name), {"ids": batch}).all():
            out[rec.run_id].append(Artifact.from_record(rec))
    return out


def reachable(conn: Connection, start: str, *, upward: bool, max_depth: int) -> Adjacency:
    """Adjacency of every run within `max_depth` edges of `start` in one direction; one statement
    per level (and per batch of a level)."""
    adjacency: Adjacency = {}
    frontier = [start]
    for _ in range(max_depth):
        frontier = [run_id for run_id in frontier if run_id not in adjacency]
        if not frontier:
            break
        found = neighbours(conn, frontier, upward=upward)
        adjacency.update(found)
        frontier = [run.id for pairs in found.values() for _, run in pairs]
    return adjacency


def tree(adjacency: Adjacency, run_id: str, depth: int, path: frozenset[str]) -> tuple[LineageNode, ...]:
    """Lineage nodes below `run_id`, `depth` levels deep, never revisiting a run on the `path`."""
    if depth <= 0:
        return ()
    nodes = []
    for relation, run in adjacency.get(run_id, ()):
        if run.id not in path:
            nodes.append(LineageNode(relation, run, tree(adjacency, run.id, depth - 1, path | {run.id})))
    return tuple(nodes)


def descendants(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    """{descendant id: relation by which it was first reached} for every run below `ids`."""
    seen: dict[str, str] = {}
    frontier = list(ids)
    while frontier:
        found = edge_ids(conn, frontier, upward=False)
        frontier = []
        for pairs in found.values():
            for relation, child in pairs:
                if child not in seen and child not in ids:
                    seen[child] = relation
                    frontier.append(child)
    return seen


@dataclass(frozen=True)
class RunOverview:
    """A run with what `runs list` shows beside it: parent edges and latest metrics."""

    run: Run
    parents: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def overview(conn: Connection, flt: RunFilter, metric_keys: Sequence[str] | None) -> list[RunOverview]:
    """Matching runs with their parents and latest metrics: three statements (per batch of ids)."""
    runs = select_runs(conn, flt)
    ids = [run.id for run in runs]
    parents = edge_ids(conn, ids, upward=True)
    metrics = latest_metrics(conn, ids, metric_keys) if metric_keys != () else {}
    return [RunOverview(run, parents[run.id], metrics.get(run.id, {})) for run in runs]


def all_ids(conn: Connection) -> list[str]:
    """Every run id, sorted (what unique-prefix abbreviation is computed against)."""
    return list(conn.execute(select(RUN.c.id).order_by(RUN.c.id)).scalars())
