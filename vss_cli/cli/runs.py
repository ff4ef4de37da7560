"""`vss runs list` and `vss runs show`: browse the lineage database."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text
from rich.tree import Tree

from vss_cli.cli.options import OutFormat
from vss_cli.cli.output import console, render_rows
from vss_cli.cli.render import flatten, fmt_duration, fmt_time, print_table, short_id, write_json
from vss_cli.cli.state import STATE
from vss_cli.errors import ConfigError
from vss_cli.store import Lineage, LineageNode, Run, Store

MIOU_KEYS = ("val_miou", "miou")
LIST_COLUMNS = ("id", "kind", "status", "created", "duration", "parents", "miou", "name")
MAX_TREE_CHILDREN = 20  # per node, so a bench with hundreds of cells stays readable


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        raise ConfigError(f"--format {fmt} is not supported here: use one of {', '.join(allowed)}")


def _miou(metrics: dict[str, float]) -> float | None:
    return next((metrics[k] for k in MIOU_KEYS if k in metrics), None)


def _list_row(store: Store, run: Run) -> dict[str, Any]:
    """Machine-readable row: full ids, ISO times, seconds, parents as `relation:id` strings."""
    return {
        "id": run.id,
        "kind": run.kind,
        "status": run.status,
        "created": run.created_at.isoformat(),
        "duration": round(run.duration_s, 3) if run.duration_s is not None else None,
        "parents": [f"{rel}:{parent.id}" for rel, parent in store.parents(run.id)],
        "miou": _miou(store.latest_metrics(run.id)),
        "name": run.name,
    }


def _table_row(run: Run, row: dict[str, Any]) -> dict[str, Any]:
    """The same row for people: UTC times to the minute, short durations, abbreviated parent ids."""
    parents = (p.split(":", 1) for p in row["parents"])
    return {
        **row,
        "created": fmt_time(run.created_at)[:16],
        "duration": fmt_duration(run.duration_s),
        "parents": " ".join(f"{rel}:{short_id(pid)}" for rel, pid in parents),
    }


def list_runs(
    kind: Annotated[
        str | None, typer.Option("--kind", help="only runs of this kind (train, prune, ...)")
    ] = None,
    status: Annotated[str | None, typer.Option("--status", help="only runs with this status")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many runs, newest first")] = 20,
    fmt: OutFormat = "table",
) -> None:
    """List runs, newest first: kind, status, times, parents and mIoU."""
    _check_format(fmt, ("table", "csv", "json"))
    store = STATE.store()
    runs = store.list_runs(kind=kind, status=status, limit=limit)
    rows = [_list_row(store, run) for run in runs]
    if fmt == "table":
        table_rows = [_table_row(run, row) for run, row in zip(runs, rows, strict=True)]
        print_table(table_rows, LIST_COLUMNS, title="runs", no_wrap=("id", "status"))
        return
    if fmt == "csv":
        rows = [{**row, "parents": " ".join(row["parents"])} for row in rows]
    render_rows(rows, fmt, columns=LIST_COLUMNS)


def _run_label(run: Run) -> Text:
    label = Text.assemble((run.id, "bold"), " ", run.kind, " ", (run.status, _status_style(run.status)))
    if run.name:
        label.append(f" {run.name}", style="italic")
    return label


def _status_style(status: str) -> str:
    return {"completed": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}.get(
        status, "dim"
    )


def _add_nodes(branch: Tree, nodes: tuple[LineageNode, ...]) -> None:
    for node in nodes[:MAX_TREE_CHILDREN]:
        sub = branch.add(Text.assemble((f"{node.relation} ", "magenta"), _run_label(node.run)))
        _add_nodes(sub, node.nodes)
    if len(nodes) > MAX_TREE_CHILDREN:
        branch.add(Text(f"… and {len(nodes) - MAX_TREE_CHILDREN} more", style="dim"))


def lineage_tree(lineage: Lineage) -> Tree:
    """Ancestors (each with its own parents) above the run, descendants below it."""
    tree = Tree(Text("lineage", style="bold"))
    if lineage.ancestors:
        _add_nodes(tree.add(Text("ancestors", style="dim")), lineage.ancestors)
    tree.add(Text.assemble("● ", _run_label(lineage.run), (" (this run)", "dim")))
    if lineage.descendants:
        _add_nodes(tree.add(Text("descendants", style="dim")), lineage.descendants)
    return tree


def _summary_rows(run: Run) -> list[dict[str, Any]]:
    fields = {
        "id": run.id,
        "kind": run.kind,
        "status": run.status,
        "name": run.name,
        "created": fmt_time(run.created_at),
        "started": fmt_time(run.started_at),
        "finished": fmt_time(run.finished_at),
        "duration": fmt_duration(run.duration_s),
        "heartbeat": fmt_time(run.heartbeat_at),
        "worker": run.worker,
        "attempt": run.attempt,
        "config_key": run.config_key,
        "out_dir": run.out_dir,
        "error": run.error,
        **{f"versions.{k}": v for k, v in (run.versions or {}).items()},
    }
    return [{"field": k, "value": v} for k, v in fields.items() if v not in (None, "")]


def _section(rows: list[dict[str, Any]], title: str, columns: tuple[str, ...]) -> None:
    if rows:
        render_rows(rows, "table", title=title, columns=columns)
    else:
        console.print(Text(f"no {title}", style="dim"))


def _show_table(store: Store, run: Run) -> None:
    _section(_summary_rows(run), f"run {run.id}", ("field", "value"))
    _section([{"key": k, "value": v} for k, v in flatten(run.config).items()], "config", ("key", "value"))
    _section(
        [{"key": k, "value": v} for k, v in store.latest_metrics(run.id).items()], "metrics", ("key", "value")
    )
    artifacts = [
        {"kind": a.kind, "path": str(a.path), "bytes": a.bytes, "sha256": a.sha256[:12]}
        for a in store.artifacts(run.id)
    ]
    _section(artifacts, "artifacts", ("kind", "path", "bytes", "sha256"))
    console.print(lineage_tree(store.lineage(run.id)))


def _show_json(store: Store, run: Run) -> None:
    write_json(
        {
            "run": run.to_dict(),
            "metrics": store.latest_metrics(run.id),
            "artifacts": [a.to_dict() for a in store.artifacts(run.id)],
            "lineage": store.lineage(run.id).to_dict(),
        }
    )


def show_run(
    run: Annotated[str, typer.Argument(help="run id or a unique prefix of one")],
    fmt: OutFormat = "table",
) -> None:
    """Show one run: fields, config, latest metrics, artifacts and its lineage tree."""
    _check_format(fmt, ("table", "json"))
    store = STATE.store()
    found = store.get_run(run)
    (_show_json if fmt == "json" else _show_table)(store, found)


def register(app: typer.Typer) -> None:
    """Add the `runs` group to the application."""
    runs_app = typer.Typer(no_args_is_help=True, help="Browse runs in the lineage database.")
    runs_app.command("list")(list_runs)
    runs_app.command("show")(show_run)
    app.add_typer(runs_app, name="runs")
