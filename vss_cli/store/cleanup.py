"""Deleting runs (`vss runs rm`) and collecting garbage (`vss runs gc`) without losing work.

The guarantees (docs/cluster.md, "What gc and rm may delete"):

* Neither deletes a live run (running with a fresh heartbeat), nor a run that a surviving completed,
  running or pending run depends on. `gc` deletes only failed/interrupted runs whose whole subtree is
  failed/interrupted and idle for the cutoff; `rm --with-children` leaves a run that another surviving
  run contains (`cell-of`, `step-of`: a cell a second grid reused) and only unlinks it.
* The plan is computed again inside the deleting write transaction (`Removal.replan`): `rm` refuses
  if the set changed since it was shown, `gc` deletes only what is still garbage.
* Artifact rows are never dropped because this host cannot see their files (an NFS outage, a node
  without the mount); they are reported, and dropped only with `gc --forget-missing`.
* Files go after the rows are committed; a deleted run's own folder (`<parent>/<run id>`) goes with it.
  Folders named after a run id that no row knows (a killed `rm`, a crash between the two) are listed
  by `gc` as orphans and removed with `gc --orphans`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, delete, or_, select

from vss_cli.errors import ConfigError
from vss_cli.store import queries
from vss_cli.store.identity import holder, is_live
from vss_cli.store.rows import STALE_AFTER_S, Artifact, Run
from vss_cli.store.tables import ARTIFACT, EDGE, METRIC, RUN

GC_STATUSES = ("failed", "interrupted")
LIVE_STATUSES = ("completed", "running", "pending")
CONTAINERS = ("cell-of", "step-of")  # the parent holds the child (a grid its cells, a cell its steps)
RUN_ID = re.compile(r"[0-9a-f]{20}")  # `identity.new_run_id`: the name of a run's own folder

Replan = Callable[[Connection, set[str]], "Removal"]


@dataclass(frozen=True)
class Removal:
    """What a deletion removes (a plan) or removed (a result)."""

    runs: tuple[Run, ...]
    artifacts: tuple[Artifact, ...]  # rows of the removed runs
    shared: tuple[Path, ...] = ()  # files kept because a surviving run's artifact records them too
    kept: tuple[tuple[Run, str], ...] = ()  # runs left out, with the reason
    missing: tuple[Artifact, ...] = ()  # gc: surviving runs' artifact rows whose files this host cannot see
    orphans: tuple[Path, ...] = ()  # gc: run folders no row knows
    forgotten: int = 0  # missing rows dropped (gc --forget-missing)
    files_removed: int = 0
    bytes_freed: int = 0
    replan: Replan | None = field(default=None, compare=False, repr=False)

    @property
    def run_ids(self) -> list[str]:
        return [run.id for run in self.runs]

    @property
    def planned_bytes(self) -> int:
        shared = {str(p) for p in self.shared}
        files = {str(a.path): a.bytes for a in self.artifacts if str(a.path) not in shared}
        return sum(files.values())


def _runs(conn: Connection, ids: Iterable[str]) -> dict[str, Run]:
    found: dict[str, Run] = {}
    for batch in queries.chunks(sorted(ids)):
        for rec in conn.execute(select(RUN).where(RUN.c.id.in_(batch))):
            found[rec.id] = Run.from_row(rec)
    return found


def shared_paths(conn: Connection, paths: Sequence[str], doomed: set[str]) -> set[str]:
    """The paths among `paths` that an artifact row of a run outside `doomed` also records."""
    shared: set[str] = set()
    for batch in queries.chunks(list(dict.fromkeys(paths))):
        query = select(ARTIFACT.c.path, ARTIFACT.c.run_id).where(ARTIFACT.c.path.in_(batch))
        shared |= {path for path, run_id in conn.execute(query) if run_id not in doomed}
    return shared


def _below(conn: Connection, ids: Sequence[str], avoid: set[str]) -> set[str]:
    """Every run below `ids`, not walking into (or past) the runs in `avoid`."""
    seen: set[str] = set()
    frontier = list(ids)
    while frontier:
        found = queries.edge_ids(conn, frontier, upward=False)
        frontier = []
        for pairs in found.values():
            for _, child in pairs:
                if child not in seen and child not in avoid and child not in ids:
                    seen.add(child)
                    frontier.append(child)
    return seen


def _owned_subtree(conn: Connection, ids: Sequence[str]) -> tuple[set[str], set[str]]:
    """(`ids` with everything below them that no surviving run contains, the runs left for that reason):
    a cell that a second grid reused (its `cell-of` edge) stays with that grid, and so do its steps."""
    keep: set[str] = set()
    while True:
        doomed = set(ids) | _below(conn, ids, keep)
        parents = queries.edge_ids(conn, sorted(doomed - set(ids)), upward=True)
        contained = {run_id for run_id, pairs in parents.items()
                     for relation, parent in pairs if relation in CONTAINERS and parent not in doomed}
        if contained <= keep:
            return doomed, keep
        keep |= contained


def _refuse_live(runs: Iterable[Run], grace_s: float) -> None:
    for run in runs:
        if is_live(run, grace_s):
            raise ConfigError(f"run {run.id} ({run.kind}) is running, held by {holder(run)}: stop it first "
                              "(runs rm never deletes a running run)")


def _refuse_orphaning(conn: Connection, doomed: set[str]) -> None:
    """ConfigError when a surviving live run depends on (is pruned, fine-tuned, evaluated, exported
    from, or is the grid of) a run to delete."""
    children = queries.edge_ids(conn, sorted(doomed), upward=False)
    edges = [(parent, relation, child) for parent, pairs in children.items() for relation, child in pairs
             if child not in doomed and relation not in CONTAINERS]
    survivors = _runs(conn, {child for _, _, child in edges})
    for parent, relation, child in edges:
        run = survivors[child]
        if run.status in LIVE_STATUSES:
            raise ConfigError(f"{run.kind} run {child} ({run.status}) is {relation} run {parent} and is not being "
                              f"deleted: delete it too, or keep {parent}")


def plan_rm(conn: Connection, ids: Sequence[str], *, with_children: bool, grace_s: float = STALE_AFTER_S) -> Removal:
    """The runs `ids` (with `with_children`, everything below them that they own); refuses to orphan
    children, to delete a live run, or a run a surviving live run depends on."""
    below = queries.descendants(conn, ids)
    if below and not with_children:
        children = sorted(below)[:5]
        raise ConfigError(
            f"{len(below)} run(s) descend from the runs to delete ({', '.join(children)}"
            f"{', …' if len(below) > 5 else ''}): pass --with-children to delete them too"
        )
    doomed, contained = _owned_subtree(conn, ids)
    runs = _runs(conn, doomed)
    _refuse_live(runs.values(), grace_s)
    _refuse_orphaning(conn, doomed)
    kept = tuple((run, "another run holds it too (a grid that reused it)") for run in _runs(conn, contained).values())

    def replan(conn: Connection, planned: set[str]) -> Removal:
        now = plan_rm(conn, ids, with_children=with_children, grace_s=grace_s)
        if set(now.run_ids) != planned:
            raise ConfigError("the runs to delete changed since they were listed (a run was added or finished "
                              "meanwhile): nothing was deleted; run the command again")
        return now

    return _plan(conn, runs, kept=kept, replan=replan)


def _plan(conn: Connection, runs: dict[str, Run], **fields) -> Removal:
    artifacts = [a for found in queries.artifacts_of(conn, list(runs)).values() for a in found]
    shared = shared_paths(conn, [str(a.path) for a in artifacts], set(runs))
    return Removal(tuple(runs.values()), tuple(artifacts), tuple(sorted(Path(p) for p in shared)), **fields)


def _idle_since(run: Run) -> datetime:
    return max(t for t in (run.created_at, run.started_at, run.finished_at, run.heartbeat_at) if t is not None)


def plan_gc(conn: Connection, cutoff: datetime, *, within: set[str] | None = None, roots: Sequence[Path] = ()) -> Removal:
    """Failed/interrupted runs (not benches) idle since before `cutoff`, each with its subtree when
    every run in it is such a run too (else the run is kept, with the reason); among `within` only
    when given (the re-check inside the deleting transaction). Also reports the surviving runs'
    artifact rows whose files this host cannot see, and orphan run folders under `roots`."""
    query = select(RUN).where(RUN.c.status.in_(GC_STATUSES), RUN.c.kind != "bench").order_by(RUN.c.id)
    candidates = [run for run in map(Run.from_row, conn.execute(query))
                  if _idle_since(run) < cutoff and (within is None or run.id in within)]
    eligible = {run.id for run in candidates}
    doomed: set[str] = set()
    kept: list[tuple[Run, str]] = []
    for run in candidates:
        below = queries.descendants(conn, [run.id])
        blockers = sorted(set(below) - eligible)
        if blockers:
            first = _runs(conn, blockers[:1])[blockers[0]]
            kept.append((run, f"{first.kind} run {first.id} below it is {first.status}"
                              f"{'' if first.status not in GC_STATUSES else ' and more recent'}"))
        else:
            doomed |= {run.id, *below}
    plan = _plan(conn, _runs(conn, doomed), kept=tuple(kept))
    missing = tuple(a for a in _surviving_artifacts(conn, doomed) if not os.path.exists(a.path))
    orphans = tuple(orphan_folders(conn, roots, cutoff))
    return Removal(plan.runs, plan.artifacts, plan.shared, kept=plan.kept, missing=missing, orphans=orphans)


def _surviving_artifacts(conn: Connection, doomed: set[str]) -> list[Artifact]:
    return [a for a in map(Artifact.from_record, conn.execute(select(ARTIFACT).order_by(ARTIFACT.c.id)))
            if a.run_id not in doomed]


def run_folder_roots(conn: Connection) -> list[Path]:
    """Folders that hold runs' own folders (`runs/train`, a `--save` folder, a grid's step folders):
    the parents of every out_dir named after its run."""
    roots = {Path(out).parent for run_id, out in conn.execute(select(RUN.c.id, RUN.c.out_dir))
             if out and Path(out).name == run_id}
    return sorted(roots)


def orphan_folders(conn: Connection, roots: Iterable[Path], cutoff: datetime) -> list[Path]:
    """Folders named after a run id, under `roots`, that no run row knows and nothing in which changed
    since `cutoff`: what a killed `rm` or a crash between rows and files leaves."""
    folders = {}
    for root in roots:
        if root.is_dir():
            folders.update({entry.name: entry for entry in root.iterdir() if entry.is_dir() and RUN_ID.fullmatch(entry.name)})
    known = set(_runs(conn, folders)) if folders else set()
    return sorted(path for name, path in folders.items() if name not in known and _untouched_since(path, cutoff))


def _untouched_since(folder: Path, cutoff: datetime) -> bool:
    stamp = cutoff.timestamp()
    return all(os.stat(os.path.join(top, name)).st_mtime < stamp
               for top, _, files in os.walk(folder) for name in [*files, "."])


def delete_rows(conn: Connection, ids: Sequence[str]) -> None:
    """Delete the runs and every metric, artifact and edge row that names one of them."""
    for batch in queries.chunks(ids):
        conn.execute(delete(METRIC).where(METRIC.c.run_id.in_(batch)))
        conn.execute(delete(ARTIFACT).where(ARTIFACT.c.run_id.in_(batch)))
        conn.execute(delete(EDGE).where(or_(EDGE.c.parent_id.in_(batch), EDGE.c.child_id.in_(batch))))
    for batch in queries.chunks(ids):
        conn.execute(delete(RUN).where(RUN.c.id.in_(batch)))


def forget_missing(conn: Connection, artifacts: Sequence[Artifact]) -> int:
    """Delete those artifact rows whose files are (still) gone; returns how many."""
    gone = [a.id for a in artifacts if not os.path.exists(a.path)]
    for start in range(0, len(gone), queries.BATCH):
        conn.execute(delete(ARTIFACT).where(ARTIFACT.c.id.in_(gone[start : start + queries.BATCH])))
    return len(gone)


def unlink_files(artifacts: Sequence[Artifact], shared: set[str]) -> tuple[int, int]:
    """Remove the artifact files not in `shared` (once each); returns (files removed, bytes freed)."""
    removed, freed = 0, 0
    for path in dict.fromkeys(str(a.path) for a in artifacts):
        if path in shared or not os.path.isfile(path):
            continue
        size = os.path.getsize(path)
        os.unlink(path)
        removed, freed = removed + 1, freed + size
    return removed, freed


def own_folders(conn: Connection, runs: Sequence[Run]) -> list[Path]:
    """The deleted runs' own folders (`<parent>/<run id>`) in which no surviving run records a file or
    has its folder (call after `delete_rows`, in the same transaction)."""
    folders = []
    for run in runs:
        folder = Path(run.out_dir) if run.out_dir else None
        if folder is None or folder.name != run.id:
            continue
        inside = f"{folder}{os.sep}"
        used = conn.execute(select(ARTIFACT.c.id).where(ARTIFACT.c.path.startswith(inside, autoescape=True)).limit(1)).first()
        used = used or conn.execute(select(RUN.c.id).where(or_(RUN.c.out_dir == str(folder),
                                                               RUN.c.out_dir.startswith(inside, autoescape=True))).limit(1)).first()
        if used is None:
            folders.append(folder)
    return folders


def remove_folders(folders: Sequence[Path]) -> tuple[int, int]:
    """Remove whole folders; returns (files removed, bytes freed)."""
    removed, freed = 0, 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for top, _, files in os.walk(folder):
            for name in files:
                removed, freed = removed + 1, freed + os.path.getsize(os.path.join(top, name))
        shutil.rmtree(folder)
    return removed, freed
