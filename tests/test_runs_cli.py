"""`vss runs list` and `vss runs show` through the Typer runner on a temporary database."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.store import Store

runner = CliRunner()


@dataclass
class Lineage:
    train: str
    prune: str
    tune: str
    ev: str


@pytest.fixture(autouse=True)
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "vss.db"
    monkeypatch.setenv("VSS_DB", str(path))
    monkeypatch.setenv("COLUMNS", "200")
    return path


@pytest.fixture
def lineage(db: Path, tmp_path: Path) -> Lineage:
    """train -> prune -> finetune, and an eval of the finetune against the train baseline."""
    with Store(db) as store:
        train = store.create_run(
            kind="train", config={"model": {"name": "tiny"}, "epochs": 2}, name="baseline"
        )
        prune = store.create_run(kind="prune", config={"method": "l1"}, parents=[(train.id, "pruned-from")])
        tune = store.create_run(kind="finetune", config={"epochs": 1}, parents=[(prune.id, "finetuned-from")])
        ev = store.create_run(
            kind="eval", config={}, parents=[(tune.id, "evaluates"), (train.id, "baseline-of")]
        )
        ckpt = tmp_path / "pruned.pt"
        ckpt.write_bytes(b"0123456789")
        store.add_artifact(prune.id, kind="checkpoint", path=ckpt)
        store.add_metrics(train.id, {"val_miou": 0.70})
        store.add_metrics(prune.id, {"channel_ratio": 0.3, "macs": 1.2e9})
        store.add_metrics(tune.id, {"val_miou": 0.55}, step=0)
        store.add_metrics(tune.id, {"val_miou": 0.65}, step=1)
        for run in (train, prune, tune):
            store.set_status(run.id, "completed")
        store.set_status(ev.id, "failed", error="boom")
    return Lineage(train.id, prune.id, tune.id, ev.id)


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_list_table(lineage: Lineage) -> None:
    out = _ok("runs", "list")
    for run_id in (lineage.train, lineage.prune, lineage.tune, lineage.ev):
        assert run_id in out
    assert "pruned-from:" in out and "0.65" in out and "baseline" in out
    assert out.index(lineage.ev) < out.index(lineage.train)  # newest first


def test_list_csv(lineage: Lineage) -> None:
    rows = list(csv.DictReader(io.StringIO(_ok("runs", "list", "--format", "csv"))))
    assert [r["id"] for r in rows] == [lineage.ev, lineage.tune, lineage.prune, lineage.train]
    assert list(rows[0]) == ["id", "kind", "status", "created", "duration", "parents", "miou", "name"]
    by_id = {r["id"]: r for r in rows}
    assert by_id[lineage.prune]["parents"] == f"pruned-from:{lineage.train}"
    assert by_id[lineage.ev]["parents"] == f"evaluates:{lineage.tune} baseline-of:{lineage.train}"
    assert float(by_id[lineage.tune]["miou"]) == 0.65 and by_id[lineage.prune]["miou"] == ""
    assert by_id[lineage.train]["name"] == "baseline" and by_id[lineage.ev]["status"] == "failed"


def test_list_json_filters_and_limit(lineage: Lineage) -> None:
    rows = json.loads(_ok("runs", "list", "--format", "json"))
    assert len(rows) == 4 and rows[0]["parents"] == [
        f"evaluates:{lineage.tune}",
        f"baseline-of:{lineage.train}",
    ]
    assert isinstance(rows[0]["duration"], float)
    assert [r["id"] for r in json.loads(_ok("runs", "list", "--kind", "prune", "--format", "json"))] == [
        lineage.prune
    ]
    assert [r["id"] for r in json.loads(_ok("runs", "list", "--status", "failed", "--format", "json"))] == [
        lineage.ev
    ]
    assert len(json.loads(_ok("runs", "list", "--limit", "2", "--format", "json"))) == 2


def test_list_on_an_empty_database(db: Path) -> None:
    assert json.loads(_ok("runs", "list", "--format", "json")) == []
    assert db.is_file()


def test_show_table_with_lineage(lineage: Lineage) -> None:
    out = _ok("runs", "show", lineage.prune[:-3])
    assert lineage.prune in out and "method" in out and "l1" in out
    assert "channel_ratio" in out and "checkpoint" in out and "pruned.pt" in out
    assert "ancestors" in out and "descendants" in out
    assert (
        out.index(lineage.train) < out.index("(this run)") < out.index(lineage.tune) < out.index(lineage.ev)
    )
    assert "pruned-from" in out and "finetuned-from" in out and "evaluates" in out


def test_show_json(lineage: Lineage) -> None:
    data = json.loads(_ok("runs", "show", lineage.tune, "--format", "json"))
    assert data["run"]["id"] == lineage.tune and data["run"]["config"] == {"epochs": 1}
    assert data["metrics"] == {"val_miou": 0.65}
    assert data["artifacts"] == []
    ancestors = data["lineage"]["ancestors"]
    assert (ancestors[0]["relation"], ancestors[0]["run"]) == ("finetuned-from", lineage.prune)
    assert ancestors[0]["nodes"][0]["run"] == lineage.train
    assert [(d["relation"], d["run"]) for d in data["lineage"]["descendants"]] == [("evaluates", lineage.ev)]
    artifacts = json.loads(_ok("runs", "show", lineage.prune, "--format", "json"))["artifacts"]
    assert [(a["kind"], a["bytes"], Path(a["path"]).name) for a in artifacts] == [
        ("checkpoint", 10, "pruned.pt")
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "show", "abc"], "no run matches 'abc'"),
        (["runs", "list", "--kind", "fit"], "unknown run kind 'fit'"),
        (["runs", "list", "--format", "xml"], "--format xml"),
        (["runs", "show", "abc", "--format", "csv"], "--format csv"),
    ],
)
def test_bad_input_exits_2_with_one_line(lineage: Lineage, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_ambiguous_prefix_exits_2(lineage: Lineage) -> None:
    result = runner.invoke(app, ["runs", "show", "0"])
    assert result.exit_code == 2 and "matches several runs" in result.stderr
