"""`vss runs compare`, `vss runs rm` and `vss runs gc`: compare runs side by side and clean up."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from vss_cli.cli.options import OutFormat
from vss_cli.cli.output import console, err_console, render_rows
from vss_cli.cli.render import flatten, fmt_bytes, parse_duration, write_json
from vss_cli.cli.runs import check_format
from vss_cli.cli.state import STATE
from vss_cli.errors import ConfigError

if TYPE_CHECKING:
    from vss_cli.store import Run
    from vss_cli.store.cleanup import Removal

MISSING = "—"  # a key one run has and another lacks


# ----------------------------------------------------------------------------------------------
# compare


def side_by_side(values: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per key of any mapping: the value in each (None when absent) and whether they differ."""
    keys = list(dict.fromkeys(k for mapping in values for k in mapping))
    rows = []
    for key in keys:
        cells = [mapping.get(key) for mapping in values]
        present = [key in mapping for mapping in values]
        rows.append({"key": key, "values": cells, "differs": len({repr(c) for c in cells}) > 1 or not all(present)})
    return rows


def _text(value: Any) -> str:
    if value is None:
        return MISSING
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _compare_table(title: str, runs: Sequence[Run], rows: list[dict[str, Any]], diff_only: bool) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("key", no_wrap=True)
    for run in runs:
        table.add_column(f"{run.id[:12]} {run.kind}", overflow="fold")
    shown = [r for r in rows if r["differs"] or not diff_only]
    for row in shown:
        style = "bold yellow" if row["differs"] else ""
        marker = "≠ " if row["differs"] else "  "
        table.add_row(Text(marker + row["key"], style=style), *(Text(_text(v), style=style) for v in row["values"]))
    if shown:
        console.print(table)
    else:
        console.print(Text(f"{title}: no differences", style="dim"))


def compare_runs(
    runs: Annotated[list[str], typer.Argument(help="two or more run ids (or unique prefixes)")],
    diff_only: Annotated[bool, typer.Option("--diff-only", help="show only the keys whose values differ")] = False,
    fmt: OutFormat = "table",
) -> None:
    """Configs and latest metrics of runs side by side; differing keys are marked ≠ and highlighted."""
    check_format(fmt, ("table", "csv", "json"))
    if len(runs) < 2:
        raise ConfigError("runs compare needs at least two runs: e.g. `vss runs compare A B`")
    store = STATE.store()
    found = [store.get_run(ref) for ref in runs]
    if len({r.id for r in found}) < len(found):
        raise ConfigError("runs compare got the same run twice: pass different runs")
    metrics = store.latest_metrics_many([r.id for r in found])
    config_rows = side_by_side([flatten(r.config) for r in found])
    metric_rows = side_by_side([metrics[r.id] for r in found])
    if fmt == "table":
        _compare_table("config", found, config_rows, diff_only)
        _compare_table("metrics", found, metric_rows, diff_only)
    elif fmt == "json":
        write_json({"runs": [r.id for r in found], "config": config_rows, "metrics": metric_rows})
    else:
        ids = [r.id for r in found]
        rows = [{"section": section, "key": row["key"], "differs": row["differs"], **dict(zip(ids, row["values"], strict=True))}
                for section, table in (("config", config_rows), ("metric", metric_rows)) for row in table]
        render_rows(rows, "csv", columns=["section", "key", "differs", *ids])


# ----------------------------------------------------------------------------------------------
# rm and gc


def _say(text: str) -> None:
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


def _describe(plan: Removal, verb: str) -> None:
    kinds: dict[str, int] = {}
    for run in plan.runs:
        kinds[run.kind] = kinds.get(run.kind, 0) + 1
    what = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "no runs"
    _say(f"{verb} {len(plan.runs)} run(s) ({what}) and {len(plan.artifacts)} artifact row(s), "
         f"{fmt_bytes(plan.planned_bytes)} of files")
    for path in plan.shared:
        _say(f"  keeping {path}: another run's artifact records it too")
    for run, reason in plan.kept:
        _say(f"  keeping {run.id} ({run.kind}, {run.status}): {reason}")


def _confirm(question: str, count: int, yes: bool) -> None:
    """Ask before deleting; without a terminal, refuse unless --yes was given."""
    if yes or count == 0:
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"refusing to delete {count} run(s) without --yes: stdin is not a terminal")
    typer.confirm(question, abort=True, err=True)


def _report(done: Removal) -> None:
    console.print(f"deleted {len(done.runs)} run(s), {done.files_removed} file(s), freed "
                  f"{fmt_bytes(done.bytes_freed)} ({done.bytes_freed} bytes)", markup=False, highlight=False,
                  soft_wrap=True)


Yes = Annotated[bool, typer.Option("--yes", "-y", help="delete without asking (needed when stdin is not a terminal)")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="say what would be deleted, delete nothing")]
MISSING_SHOWN = 5


def rm_runs(
    runs: Annotated[list[str], typer.Argument(help="run ids (or unique prefixes) to delete")],
    with_children: Annotated[bool, typer.Option("--with-children", help="also delete every run below them that "
                                                "no other run holds (a cell another grid reused stays)")] = False,
    yes: Yes = False,
    dry_run: DryRun = False,
) -> None:
    """Delete runs with their metrics, artifacts, edges and files (files another run records are kept).

    Refuses a running run whose worker still heartbeats, and a run that a surviving completed, running
    or pending run depends on; the check is repeated inside the deleting transaction.
    """
    store = STATE.store()
    if not dry_run:
        store.check_writable()
    plan = store.plan_removal(runs, with_children=with_children)
    _describe(plan, "would delete" if dry_run else "deleting")
    if dry_run:
        return
    _confirm("delete them?", len(plan.runs), yes)
    _report(store.remove(plan))


def _describe_garbage(plan: Removal) -> None:
    if plan.missing:
        _say(f"{len(plan.missing)} artifact row(s) of kept runs point at files this host cannot see (kept: the "
             "folder may only be unmounted here; --forget-missing drops them), e.g.:")
        for artifact in plan.missing[:MISSING_SHOWN]:
            _say(f"  {artifact.path} (run {artifact.run_id}, {artifact.kind})")
    if plan.orphans:
        _say(f"{len(plan.orphans)} run folder(s) no run row knows (a killed rm or crash; --orphans removes them):")
        for path in plan.orphans:
            _say(f"  {path}")


def gc_runs(
    older_than: Annotated[str, typer.Option("--older-than", help="age of the failed/interrupted runs to drop: "
                                            "90s, 30m, 12h, 7d, 2w")] = "7d",
    forget_missing: Annotated[bool, typer.Option("--forget-missing", help="also drop the artifact rows whose files "
                                                 "this host cannot see (asks again; they are gone for every host)")] = False,
    orphans: Annotated[bool, typer.Option("--orphans", help="also remove the run folders no run row knows")] = False,
    scan: Annotated[list[Path] | None, typer.Option("--scan", help="another folder of run folders to look for "
                                                   "orphans in (besides the parents of every run's folder)")] = None,
    yes: Yes = False,
    dry_run: DryRun = False,
) -> None:
    """Drop old failed/interrupted runs; report artifact rows whose files are gone and orphan folders.

    A failed run goes with its subtree only when every run in it is failed or interrupted and idle
    for --older-than; bench runs, completed and running runs and anything they depend on always stay.
    """
    store = STATE.store()
    if not dry_run:
        store.check_writable()
    plan = store.plan_gc(older_than_s=parse_duration(older_than, "--older-than"), roots=scan or ())
    _describe(plan, "would delete" if dry_run else "deleting")
    _describe_garbage(plan)
    if dry_run:
        return
    _confirm("delete them?", len(plan.runs), yes)
    if forget_missing and plan.missing:
        _confirm(f"forget {len(plan.missing)} artifact row(s) whose files this host cannot see? (the runs then "
                 "have no such artifact on any host)", len(plan.missing), yes)
    if orphans and plan.orphans:
        _confirm(f"remove {len(plan.orphans)} orphan run folder(s)?", len(plan.orphans), yes)
    done = store.remove(plan, forget_missing=forget_missing, orphans=orphans)
    _report(done)
    if forget_missing:
        console.print(f"forgot {done.forgotten} artifact row(s) whose files were gone", markup=False, highlight=False)


def register(runs_app: typer.Typer) -> None:
    """Add compare, rm and gc to the `runs` group."""
    runs_app.command("compare")(compare_runs)
    runs_app.command("rm")(rm_runs)
    runs_app.command("gc")(gc_runs)
