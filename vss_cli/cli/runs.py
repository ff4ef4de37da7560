"""`vss runs list` and `vss runs show`: browse the lineage database (no torch, store imported lazily)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text
from rich.tree import Tree

from vss_cli.cli.options import OutFormat
from vss_cli.cli.output import console, render_rows
from vss_cli.cli.render import (
    TableColumn,
    abbreviations,
    flatten,
    fmt_age,
    fmt_duration,
    fmt_time,
    parse_since,
    print_fitted_table,
    write_json,
)
from vss_cli.cli.state import STATE
from vss_cli.errors import ConfigError

if TYPE_CHECKING:
    from vss_cli.store import Lineage, LineageNode, Run, Store
    from vss_cli.store.queries import RunOverview

# train/finetune (best.pt's mIoU once finished, as its eval sees it; the last epoch's while running), cell, eval
MIOU_KEYS = ("best_val_miou", "val_miou", "miou", "candidate_miou")
LIST_COLUMNS = ("id", "kind", "status", "created", "duration", "parents", "miou", "name")  # csv / json
NARROW_COLUMNS = ("id", "kind", "status", "age", "miou", "name")  # the table below 120 columns
WIDE_COLUMNS = ("id", "kind", "status", "created", "age", "duration", "parents", "miou", "name")
WIDE_AT = 120
MAX_TREE_CHILDREN = 20  # per node, so a bench with hundreds of cells stays readable


def check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        raise ConfigError(f"--format {fmt} is not supported here: use one of {', '.join(allowed)}")


def main_metric(metrics: dict[str, float]) -> float | None:
    """The headline number of a run: its mIoU (validation mIoU while training, the candidate's for an eval)."""
    return next((metrics[k] for k in MIOU_KEYS if k in metrics), None)


# ----------------------------------------------------------------------------------------------
# runs list: columns


@dataclass(frozen=True)
class Entry:
    """One listed run with what its cells are computed from."""

    item: RunOverview
    now: datetime
    abbrev: Mapping[str, str]  # run id -> shortest unique prefix (table only)
    label: str = ""  # what an unnamed step is: its method and ratio (table only)

    @property
    def run(self) -> Run:
        return self.item.run

    def short(self, run_id: str) -> str:
        return self.abbrev.get(run_id, run_id)


@dataclass(frozen=True)
class ListColumn:
    """A `runs list` column: its machine value (csv/json), its table text, whether it is never cut."""

    name: str
    value: Callable[[Entry], Any]
    text: Callable[[Entry], str] | None = None
    keep: bool = False
    justify: str = "left"

    def cell(self, entry: Entry) -> str:
        if self.text is not None:
            return self.text(entry)
        value = self.value(entry)
        return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _age_s(e: Entry) -> float:
    return (e.now - e.run.created_at).total_seconds()


def _duration(e: Entry) -> float | None:
    return round(e.run.duration_s, 3) if e.run.duration_s is not None else None


COLUMNS: dict[str, ListColumn] = {
    c.name: c
    for c in (
        ListColumn("id", lambda e: e.run.id, lambda e: e.short(e.run.id), keep=True),
        ListColumn("kind", lambda e: e.run.kind, keep=True),
        ListColumn("status", lambda e: e.run.display_status(e.now), keep=True),
        ListColumn("age", lambda e: round(_age_s(e), 3), lambda e: fmt_age(_age_s(e)), keep=True, justify="right"),
        ListColumn("created", lambda e: e.run.created_at.isoformat(), lambda e: fmt_time(e.run.created_at)[:16],
                   keep=True),
        ListColumn("duration", _duration, lambda e: fmt_duration(e.run.duration_s), keep=True, justify="right"),
        ListColumn("parents", lambda e: [f"{rel}:{pid}" for rel, pid in e.item.parents],
                   lambda e: " ".join(f"{rel}:{e.short(pid)}" for rel, pid in e.item.parents)),
        ListColumn("miou", lambda e: main_metric(e.item.metrics), keep=True, justify="right"),
        ListColumn("name", lambda e: e.run.name, lambda e: e.run.name or e.label),
        ListColumn("worker", lambda e: e.run.worker),
        ListColumn("attempt", lambda e: e.run.attempt, justify="right"),
        ListColumn("config_key", lambda e: e.run.config_key, lambda e: e.run.config_key[:12]),
        ListColumn("heartbeat", lambda e: e.run.heartbeat_at.isoformat() if e.run.heartbeat_at else None,
                   lambda e: fmt_age((e.now - e.run.heartbeat_at).total_seconds()) if e.run.heartbeat_at else ""),
    )
}  # fmt: skip


def prune_label(config: Mapping[str, Any]) -> str:
    """`fpgm r0.2 macs`: a prune run's method, ratio and what the ratio counted."""
    ratio = config.get("global_ratio")
    return " ".join(str(p) for p in (config.get("method"), f"r{ratio:g}" if isinstance(ratio, float | int) else None,
                                     config.get("budget")) if p)


UPSTREAM = ("finetuned-from", "evaluates")  # the edges a fine-tune or an eval takes its method and ratio through


def step_labels(store: Store, items: Sequence[RunOverview]) -> dict[str, str]:
    """Per run id, the method and ratio of the prune it is (prune), fine-tunes (finetune) or evaluates
    (eval, through its fine-tune); the model of a train run. At most two batched parent lookups."""
    labels: dict[str, str] = {}
    pending: dict[str, str] = {}  # run id -> the run whose parents are looked at next
    for item in items:
        run = item.run
        if run.kind == "prune":
            labels[run.id] = prune_label(run.config)
        elif run.kind == "train" and run.config.get("model"):
            labels[run.id] = str(run.config["model"])
        elif run.kind in ("finetune", "eval"):
            pending[run.id] = run.id
    for _ in range(2):  # eval -> finetune -> prune
        if not pending:
            break
        parents = store.parents_many(sorted(set(pending.values())))
        following: dict[str, str] = {}
        for rid, at in pending.items():
            ups = [p for rel, p in parents.get(at, []) if rel in UPSTREAM]
            prune = next((p for p in ups if p.kind == "prune"), None)
            tuned = next((p for p in ups if p.kind == "finetune"), None)
            if prune is not None:
                labels[rid] = prune_label(prune.config)
            elif tuned is not None:
                following[rid] = tuned.id
        pending = following
    return labels


def _dynamic(name: str) -> ListColumn:
    """`config.KEY` (a dotted config key) or `metric.KEY` (the latest value of a metric)."""
    section, _, key = name.partition(".")
    if section == "config" and key:
        return ListColumn(name, lambda e: flatten(e.run.config).get(key))
    if section == "metric" and key:
        return ListColumn(name, lambda e: e.item.metrics.get(key), justify="right")
    known = ", ".join(COLUMNS)
    raise ConfigError(f"unknown column '{name}': use {known}, config.KEY or metric.KEY")


def resolve_columns(spec: str | None, fmt: str, width: int) -> list[ListColumn]:
    """The columns asked for with --columns, else the defaults for this format and terminal width."""
    if spec:
        names = [n.strip() for n in spec.split(",") if n.strip()]
    elif fmt != "table":
        names = list(LIST_COLUMNS)
    else:
        names = list(WIDE_COLUMNS if width >= WIDE_AT else NARROW_COLUMNS)
    return [COLUMNS.get(name) or _dynamic(name) for name in names]


def _metric_keys(columns: Sequence[ListColumn]) -> tuple[str, ...]:
    keys = [c.name.partition(".")[2] for c in columns if c.name.startswith("metric.")]
    return (*(MIOU_KEYS if any(c.name == "miou" for c in columns) else ()), *keys)


# ----------------------------------------------------------------------------------------------
# runs list: the command


def _where(pairs: Sequence[str], **named: str | None) -> tuple[tuple[str, str], ...]:
    out = [(key, value) for key, value in named.items() if value is not None]
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--where '{pair}' is not KEY=VALUE: e.g. --where lr=0.01 or --where model=unet")
        out.append((key.strip(), value))
    return tuple(out)


def list_runs(
    kind: Annotated[str | None, typer.Option("--kind", help="only runs of this kind (train, prune, ...)")] = None,
    status: Annotated[str | None, typer.Option("--status", help="only runs with this status (or `stale`: "
                                               "running, but no heartbeat for a while)")] = None,
    method: Annotated[str | None, typer.Option("--method", help="only runs whose config has this method")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="only runs on this dataset")] = None,
    model: Annotated[str | None, typer.Option("--model", help="only runs of this model")] = None,
    bench: Annotated[str | None, typer.Option("--bench", help="only the runs of this grid (a bench id or "
                                              "`latest`): the bench, its cells and their steps")] = None,
    parent: Annotated[str | None, typer.Option("--parent", help="only the direct children of this run")] = None,
    since: Annotated[str | None, typer.Option("--since", help="only runs created since: 7d, 12h, 30m or a "
                                              "date such as 2024-05-01")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="KEY=VALUE on the config (dotted keys, "
                                                    "repeatable), e.g. --where ratio=0.5")] = None,
    columns: Annotated[str | None, typer.Option("--columns", help="comma-separated columns: "
                                                f"{', '.join(COLUMNS)}, config.KEY, metric.KEY")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many runs, newest first")] = 20,
    fmt: OutFormat = "table",
) -> None:
    """List runs, newest first: kind, status, age, parents and mIoU (at 120+ columns, more)."""
    from vss_cli.store.grid import resolve_bench
    from vss_cli.store.queries import RunFilter

    check_format(fmt, ("table", "csv", "json"))
    cols = resolve_columns(columns, fmt, console.width)
    store, now = STATE.store(), datetime.now(timezone.utc)
    flt = RunFilter(kind=kind, status=status, since=parse_since(since, now) if since else None,
                    parent=store.get_run(parent).id if parent is not None else None,
                    bench=resolve_bench(store, bench).id if bench is not None else None,
                    where=_where(where or (), method=method, dataset=dataset, model=model), limit=limit)
    items = store.overview(flt, metric_keys=_metric_keys(cols))
    shown = [rid for i in items for rid in (i.run.id, *(pid for _, pid in i.parents))] if fmt == "table" else []
    abbrev = abbreviations(shown, store.run_ids()) if shown else {}
    labels = step_labels(store, items) if fmt == "table" and any(c.name == "name" for c in cols) else {}
    entries = [Entry(item, now, abbrev, labels.get(item.run.id, "")) for item in items]
    if fmt == "table":
        rows = [[c.cell(e) for c in cols] for e in entries]
        total = store.count_runs(flt) if len(rows) >= limit else len(rows)
        title = f"runs ({len(rows)} of {total}, newest first; --limit N shows more)" if total > len(rows) \
            else f"runs ({len(rows)})"
        print_fitted_table(rows, [TableColumn(c.name, c.keep, c.justify) for c in cols], title=title)
        return
    rows = [{c.name: c.value(e) for c in cols} for e in entries]
    if fmt == "csv":
        rows = [{k: " ".join(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows]
    render_rows(rows, fmt, columns=[c.name for c in cols])


# ----------------------------------------------------------------------------------------------
# runs show


def run_label(run: Run) -> Text:
    label = Text.assemble((run.id, "bold"), " ", run.kind, " ", (run.display_status(), status_style(run.status)))
    if run.name:
        label.append(f" {run.name}", style="italic")
    return label


def status_style(status: str) -> str:
    return {"completed": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}.get(status, "dim")


def _add_nodes(branch: Tree, nodes: tuple[LineageNode, ...]) -> None:
    for node in nodes[:MAX_TREE_CHILDREN]:
        sub = branch.add(Text.assemble((f"{node.relation} ", "magenta"), run_label(node.run)))
        _add_nodes(sub, node.nodes)
    if len(nodes) > MAX_TREE_CHILDREN:
        branch.add(Text(f"… and {len(nodes) - MAX_TREE_CHILDREN} more", style="dim"))


def lineage_tree(lineage: Lineage) -> Tree:
    """Ancestors (each with its own parents) above the run, descendants below it."""
    tree = Tree(Text("lineage", style="bold"))
    if lineage.ancestors:
        _add_nodes(tree.add(Text("ancestors", style="dim")), lineage.ancestors)
    tree.add(Text.assemble("● ", run_label(lineage.run), (" (this run)", "dim")))
    if lineage.descendants:
        _add_nodes(tree.add(Text("descendants", style="dim")), lineage.descendants)
    return tree


def _summary_fields(run: Run) -> dict[str, Any]:
    fields = {
        "id": run.id, "kind": run.kind, "status": run.display_status(), "name": run.name,
        "created": fmt_time(run.created_at), "started": fmt_time(run.started_at),
        "finished": fmt_time(run.finished_at), "duration": fmt_duration(run.duration_s),
        "heartbeat": fmt_time(run.heartbeat_at), "worker": run.worker, "attempt": run.attempt,
        "config_key": run.config_key, "out_dir": run.out_dir, "error": run.error,
        **{f"versions.{k}": v for k, v in (run.versions or {}).items()},
    }  # fmt: skip
    return {k: v for k, v in fields.items() if v not in (None, "")}


def _section(rows: list[dict[str, Any]], title: str, columns: tuple[str, ...]) -> None:
    if rows:
        render_rows(rows, "table", title=title, columns=columns, keep=columns[:1])
    else:
        console.print(Text(f"no {title}", style="dim"))


def _show_table(store: Store, run: Run) -> None:
    _section([{"field": k, "value": v} for k, v in _summary_fields(run).items()], f"run {run.id}", ("field", "value"))
    _section([{"key": k, "value": v} for k, v in flatten(run.config).items()], "config", ("key", "value"))
    _section([{"key": k, "value": v} for k, v in store.latest_metrics(run.id).items()], "metrics", ("key", "value"))
    artifacts = [{"kind": a.kind, "path": str(a.path), "bytes": a.bytes, "sha256": a.sha256[:12]}
                 for a in store.artifacts(run.id)]
    _section(artifacts, "artifacts", ("kind", "path", "bytes", "sha256"))
    console.print(lineage_tree(store.lineage(run.id)))


def _show_json(store: Store, run: Run) -> None:
    write_json({
        "run": run.to_dict(),
        "metrics": store.latest_metrics(run.id),
        "artifacts": [a.to_dict() for a in store.artifacts(run.id)],
        "lineage": store.lineage(run.id).to_dict(),
    })  # fmt: skip


def _show_csv(store: Store, run: Run) -> None:
    """section,key,value rows: the run's fields, config, latest metrics, artifacts and parents."""
    rows = [{"section": "run", "key": k, "value": v} for k, v in _summary_fields(run).items()]
    rows += [{"section": "config", "key": k, "value": v} for k, v in flatten(run.config).items()]
    rows += [{"section": "metric", "key": k, "value": v} for k, v in store.latest_metrics(run.id).items()]
    rows += [{"section": "artifact", "key": a.kind, "value": str(a.path)} for a in store.artifacts(run.id)]
    rows += [{"section": "parent", "key": rel, "value": p.id} for rel, p in store.parents(run.id)]
    rows += [{"section": "child", "key": rel, "value": c.id} for rel, c in store.children(run.id)]
    render_rows(rows, "csv", columns=("section", "key", "value"))


SHOW_FORMATS = {"table": _show_table, "json": _show_json, "csv": _show_csv}


def show_run(
    run: Annotated[str, typer.Argument(help="run id or a unique prefix of one")],
    fmt: OutFormat = "table",
) -> None:
    """Show one run: fields, config, latest metrics, artifacts and its lineage tree."""
    check_format(fmt, tuple(SHOW_FORMATS))
    store = STATE.store()
    SHOW_FORMATS[fmt](store, store.get_run(run))


def register(app: typer.Typer) -> None:
    """Add the `runs` group to the application."""
    from vss_cli.cli import runs_manage

    runs_app = typer.Typer(no_args_is_help=True, help="Browse, compare and clean up runs in the lineage database.")
    runs_app.command("list")(list_runs)
    runs_app.command("show")(show_run)
    runs_manage.register(runs_app)
    app.add_typer(runs_app, name="runs")
