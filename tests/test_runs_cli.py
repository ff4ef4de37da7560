"""`vss runs list` and `vss runs show` through the Typer runner on a temporary database."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from screens import as_terminal, plain
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
        store.add_metrics(ev.id, {"baseline_miou": 0.70, "candidate_miou": 0.64})
        for run in (train, prune, tune):
            store.set_status(run.id, "completed")
        store.set_status(ev.id, "failed", error="boom")
    return Lineage(train.id, prune.id, tune.id, ev.id)


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _short(out: str, run_id: str) -> str:
    """The abbreviation of `run_id` shown in a table (the longest prefix of it on a line)."""
    found = [tok for line in out.splitlines() for tok in line.split() if run_id.startswith(tok.split(":")[-1])]
    return max((tok.split(":")[-1] for tok in found), key=len)


def test_list_table(lineage: Lineage) -> None:
    out = _ok("runs", "list")
    shorts = [_short(out, run_id) for run_id in (lineage.train, lineage.prune, lineage.tune, lineage.ev)]
    assert all(8 <= len(s) <= 20 for s in shorts)  # 20 only for runs created in the same millisecond
    for short, run_id in zip(shorts, (lineage.train, lineage.prune, lineage.tune, lineage.ev), strict=True):
        assert json.loads(_ok("runs", "show", short, "--format", "json"))["run"]["id"] == run_id  # typed back
    assert f"pruned-from:{shorts[0]}" in out and "0.65" in out and "baseline" in out
    assert out.index(shorts[3]) < out.index(shorts[0])  # newest first


def test_list_csv(lineage: Lineage) -> None:
    rows = list(csv.DictReader(io.StringIO(_ok("runs", "list", "--format", "csv"))))
    assert [r["id"] for r in rows] == [lineage.ev, lineage.tune, lineage.prune, lineage.train]
    assert list(rows[0]) == ["id", "kind", "status", "created", "duration", "parents", "miou", "name"]
    by_id = {r["id"]: r for r in rows}
    assert by_id[lineage.prune]["parents"] == f"pruned-from:{lineage.train}"
    assert by_id[lineage.ev]["parents"] == f"evaluates:{lineage.tune} baseline-of:{lineage.train}"
    assert float(by_id[lineage.tune]["miou"]) == 0.65 and by_id[lineage.prune]["miou"] == ""
    assert float(by_id[lineage.ev]["miou"]) == 0.64  # an eval's headline is its candidate's mIoU
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


def _unique_prefix(run_id: str, others: Sequence[str]) -> str:
    """The shortest prefix of `run_id` no other id starts with (the whole id when runs made in one
    millisecond differ only in the last digit)."""
    return next(run_id[:n] for n in range(8, len(run_id) + 1) if not any(o.startswith(run_id[:n]) for o in others))


def test_show_table_with_lineage(lineage: Lineage) -> None:
    out = _ok("runs", "show", _unique_prefix(lineage.prune, [lineage.train, lineage.tune, lineage.ev]))
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
        (["runs", "show", "abc", "--format", "markdown"], "--format markdown"),
        (["runs", "list", "--columns", "id,bogus"], "unknown column 'bogus'"),
        (["runs", "list", "--where", "noequals"], "is not KEY=VALUE"),
        (["runs", "list", "--since", "yesterday"], "is not a duration"),
        (["runs", "list", "--since", "99999999d"], "reaches back before year 1"),
        (["runs", "gc", "--older-than", "7x"], "is not a duration"),
        (["runs", "compare", "abc"], "at least two runs"),
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


# -- issue 13: formats, narrow terminals, filters, compare, rm, gc, a fast start -------------------


def test_show_accepts_every_format_its_help_lists(lineage: Lineage) -> None:
    help_text = _ok("runs", "show", "--help")
    listed = re.search(r"table, csv or json", help_text)
    assert listed is not None
    for fmt in ("table", "csv", "json"):
        assert lineage.prune in _ok("runs", "show", lineage.prune, "--format", fmt)
    rows = list(csv.DictReader(io.StringIO(_ok("runs", "show", lineage.prune, "--format", "csv"))))
    assert {"section": "config", "key": "method", "value": "l1"} in rows
    assert {"section": "parent", "key": "pruned-from", "value": lineage.train} in rows


def test_list_at_80_columns_keeps_id_kind_status_age_and_miou_whole(lineage: Lineage, db: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(db) as store:
        run = store.create_run(kind="finetune", config={}, name="a very long name " * 6, metrics={"val_miou": 0.123456})
        store.set_status(run.id, "interrupted")
    as_terminal(monkeypatch, 80)
    out = plain(_ok("runs", "list"))
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    row = next(line for line in lines if "finetune" in line and "interrupted" in line)
    short = row.split()[0]
    assert run.id.startswith(short) and len(short) >= 8
    assert re.search(r"\binterrupted\s+\d+s\s+0\.1235\s+a very long", row) and row.rstrip().endswith("…")
    assert "…" not in " ".join(row.split()[:5])
    assert len([line for line in lines if "train" in line and "0.7" in line]) == 1  # one line per run
    as_terminal(monkeypatch, 130)
    wide = plain(_ok("runs", "list"))
    assert "parents" in wide and "created" in wide and "duration" in wide


def test_list_filters_and_columns(lineage: Lineage, db: Path) -> None:
    def ids(*args: str) -> list[str]:
        return [r["id"] for r in json.loads(_ok("runs", "list", "--format", "json", *args))]

    assert ids("--method", "l1") == [lineage.prune]
    assert ids("--where", "model.name=tiny", "--where", "epochs=2") == [lineage.train]
    others = [lineage.prune, lineage.tune, lineage.ev]  # created in one millisecond they share a long prefix
    prefix = next(lineage.train[:n] for n in range(4, len(lineage.train))
                  if not any(o.startswith(lineage.train[:n]) for o in others))
    assert ids("--parent", prefix) == [lineage.ev, lineage.prune]
    assert ids("--since", "1h") == [lineage.ev, lineage.tune, lineage.prune, lineage.train]
    assert ids("--since", "2999-01-01") == []
    assert ids("--since", "2999-01-01T00:00+14:00") == []  # an offset is converted to UTC
    rows = json.loads(_ok("runs", "list", "--format", "json", "--columns", "id,config.method,metric.macs,age"))
    prune = next(r for r in rows if r["id"] == lineage.prune)
    assert list(prune) == ["id", "config.method", "metric.macs", "age"]
    assert (prune["config.method"], prune["metric.macs"]) == ("l1", 1.2e9) and prune["age"] >= 0
    with Store(db) as store:
        bench = store.create_run(kind="bench", config={})
        cell = store.create_run(kind="cell", config={}, parents=[(bench.id, "cell-of")])
        step = store.create_run(kind="eval", config={}, parents=[(cell.id, "step-of")])
    assert ids("--bench", "latest") == [step.id, cell.id, bench.id]
    result = runner.invoke(app, ["runs", "list", "--bench", lineage.train])
    assert result.exit_code == 2 and "not a bench" in result.stderr


def test_stale_running_run_is_shown_stale(db: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import update

    from vss_cli.store.tables import RUN

    with Store(db) as store:
        dead = store.create_run(kind="train", config={})
        alive = store.create_run(kind="train", config={"i": 1})
        with store.engine.begin() as conn:
            old = datetime.now(timezone.utc) - timedelta(hours=2)
            conn.execute(update(RUN).where(RUN.c.id == dead.id).values(heartbeat_at=old))
    rows = {r["id"]: r["status"] for r in json.loads(_ok("runs", "list", "--format", "json"))}
    assert rows == {dead.id: "stale", alive.id: "running"}
    assert [r["id"] for r in json.loads(_ok("runs", "list", "--status", "stale", "--format", "json"))] == [dead.id]
    with Store(db) as store:
        assert store.get_run(dead.id).status == "running"  # display only: the row is unchanged


def test_compare_highlights_differences(lineage: Lineage) -> None:
    out = _ok("runs", "compare", lineage.train, lineage.tune)
    assert "≠ epochs" in out and "≠ val_miou" in out and "0.65" in out and "0.7" in out
    data = json.loads(_ok("runs", "compare", lineage.train, lineage.tune, "--format", "json"))
    assert data["runs"] == [lineage.train, lineage.tune]
    by_key = {r["key"]: r for r in data["config"]}
    assert by_key["epochs"] == {"key": "epochs", "values": [2, 1], "differs": True}
    assert by_key["model.name"]["values"] == ["tiny", None] and by_key["model.name"]["differs"]
    assert {r["key"]: r["values"] for r in data["metrics"]} == {"val_miou": [0.7, 0.65]}
    rows = list(csv.DictReader(io.StringIO(_ok("runs", "compare", lineage.train, lineage.tune, "--format", "csv"))))
    assert rows[0].keys() == {"section", "key", "differs", lineage.train, lineage.tune}
    diff_only = _ok("runs", "compare", lineage.train, lineage.prune, "--diff-only")
    assert "≠" in diff_only and "method" in diff_only


def test_rm_refuses_without_yes_when_not_interactive(lineage: Lineage, db: Path) -> None:
    result = runner.invoke(app, ["runs", "rm", lineage.ev])
    assert result.exit_code == 2 and "without --yes" in result.stderr
    result = runner.invoke(app, ["runs", "rm", lineage.prune, "--yes"])
    assert result.exit_code == 2 and "--with-children" in result.stderr
    with Store(db) as store:
        assert len(store.list_runs()) == 4


def test_rm_with_children_keeps_a_shared_checkpoint(lineage: Lineage, db: Path, tmp_path: Path) -> None:
    shared = tmp_path / "pruned.pt"
    with Store(db) as store:
        other = store.create_run(kind="eval", config={"other": True})
        store.add_artifact(other.id, kind="checkpoint", path=shared)  # the same file as the prune run's
        own = tmp_path / "tune.pt"
        own.write_bytes(b"x" * 33)
        store.add_artifact(lineage.tune, kind="checkpoint", path=own)
    out = _ok("runs", "rm", lineage.prune, "--with-children", "--yes")
    assert "deleted 3 run(s), 1 file(s)" in out and "(33 bytes)" in out
    assert shared.is_file() and not own.exists()
    with Store(db) as store:
        assert {r.id for r in store.list_runs()} == {lineage.train, other.id}
        assert store.children(lineage.train) == [] and store.artifacts(other.id)[0].path == shared.resolve()


def test_gc_drops_old_failed_runs_and_reports_bytes(lineage: Lineage, db: Path, tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import update

    from vss_cli.store.tables import RUN

    log = tmp_path / "eval.log"
    log.write_bytes(b"z" * 50)
    with Store(db) as store:
        store.add_artifact(lineage.ev, kind="report", path=log)
        with store.engine.begin() as conn:
            old = datetime.now(timezone.utc) - timedelta(days=9)
            conn.execute(update(RUN).where(RUN.c.id == lineage.ev).values(created_at=old, started_at=old,
                                                                           finished_at=old, heartbeat_at=old))
    assert "would delete 1 run(s)" in runner.invoke(app, ["runs", "gc", "--dry-run"]).stderr
    assert log.exists()
    out = _ok("runs", "gc", "--older-than", "7d", "--yes")
    assert "deleted 1 run(s), 1 file(s)" in out and "(50 bytes)" in out and not log.exists()
    with Store(db) as store:
        assert {r.id for r in store.list_runs()} == {lineage.train, lineage.prune, lineage.tune}


TORCH = ("torch", "torchvision")
STORE = ("sqlalchemy", "sqlmodel")  # the store's import cost: paid only by a command that opens the database


@pytest.mark.parametrize(("args", "slow"), [(["--help"], TORCH + STORE), (["runs", "--help"], TORCH + STORE),
                                            (["runs", "list"], TORCH)])
def test_a_fast_start_imports_no_torch(args: list[str], slow: tuple[str, ...], tmp_path: Path) -> None:
    code = ("import sys, runpy; sys.argv = ['vss', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('vss_cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print('LOADED', *sorted(m for m in sys.modules if m.split('.')[0] in {slow!r}))")
    env = {**os.environ, "VSS_DB": str(tmp_path / "fresh.db"), "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "LOADED"


def test_list_shows_a_finished_finetunes_best_checkpoint_miou(db: Path) -> None:
    """The eval of a fine-tune loads best.pt, so the listing shows best.pt's mIoU, not the last epoch's."""
    with Store(db) as store:
        run = store.create_run(kind="finetune", config={}, metrics={"val_miou": 0.5})
        store.add_metrics(run.id, {"val_miou": 0.4})  # the last epoch did worse
        store.add_metrics(run.id, {"best_val_miou": 0.5, "best_epoch": 0})
    rows = json.loads(_ok("runs", "list", "--format", "json"))
    assert next(r for r in rows if r["id"] == run.id)["miou"] == 0.5
