"""Run the `vss` CLI in-process, on one thread, as the tests do."""

from __future__ import annotations

from typer.testing import CliRunner

from vss_cli.cli.app import app

runner = CliRunner()


def vss(*args: str):
    """`vss --threads 1 args`: the CliRunner result."""
    return runner.invoke(app, ["--threads", "1", *args])


def ok(*args: str):
    """`vss args`, asserting it exits 0."""
    result = vss(*args)
    assert result.exit_code == 0, result.output
    return result
