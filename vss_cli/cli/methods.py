"""`vss methods`: every pruning criterion with its paper, what its scores need, its paper allocation
and its options (types, the paper's defaults, help)."""

from __future__ import annotations

import typer

from vss_cli.cli import options as o
from vss_cli.cli.output import Format, render_rows
from vss_cli.errors import ConfigError

TABLE_COLUMNS = ("method", "paper", "scores_need", "paper_allocation", "options_str")
HEADERS = {"scores_need": "scores need", "paper_allocation": "paper allocation", "options_str": "options"}


def methods(fmt: o.OutFormat = "table") -> None:
    """List the pruning methods: paper, what scoring needs, the paper's allocation rule and every option
    with its default (set one with `vss prune --option KEY=VALUE` or `vss bench --option METHOD:KEY=VALUE`).

    `--format json` also gives each option's type, help and allowed values."""
    from vss_cli.pruning.registry import describe_methods

    if fmt not in {f.value for f in Format}:
        raise ConfigError(f"--format {fmt} is not supported: choose table, csv or json")
    rows = describe_methods()
    flat = fmt != Format.json.value  # table and csv: the options as one `name=default, ...` cell
    columns = TABLE_COLUMNS if flat else None
    if fmt == Format.table.value:  # the table's headers as people read them (csv keeps the field names)
        rows = [{HEADERS.get(k, k): v for k, v in row.items()} for row in rows]
        columns = [HEADERS.get(c, c) for c in TABLE_COLUMNS]
    render_rows(rows, fmt, title="pruning methods (docs/methods.md)", columns=columns)


def register(app: typer.Typer) -> None:
    app.command("methods")(methods)
