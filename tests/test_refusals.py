"""Bad input found only once a checkpoint is loaded (issue 22, split from test_faults.py): exit 2, one
line naming the fix, no row, no file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_faults import TINY_TRAIN, _cli
from vss_cli.store import Store


def _refused(args: list[str], *needles: str) -> None:
    result = _cli(args)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and all(n in line for n in needles), line
    db = Path(os.environ["VSS_DB"])
    assert not db.exists() or Store(db).list_runs() == []
    assert not Path("runs").exists()


PRUNE = ["prune", "--method", "l1", "--input-size", "32,48", "--samples", "0"]


def test_prune_refuses_before_any_row(tmp_path, tiny_baseline):
    ckpt = ["--ckpt", str(tiny_baseline)]
    _refused([*PRUNE, *ckpt, "--global-ratio", "0.999999"], "out of reach", "pass a smaller ratio")
    _refused(["prune", *ckpt, "--method", "fgp", "--global-ratio", "0.3", "--option", "heat=bogus",
              "--samples", "4"], "heat=bogus")
    _refused([*PRUNE, *ckpt, "--global-ratio", "0.3", "--input-size", "3,3"], "--input-size 3,3", "pass a larger")
    (tmp_path / "taken.pt").touch()
    _refused([*PRUNE, *ckpt, "--global-ratio", "0.3", "--save", "taken.pt"], "--save taken.pt is a file",
             "pass a folder")


def test_train_refuses_before_any_row(tmp_path):
    _refused([*TINY_TRAIN[:1], "--epochs", "0", *TINY_TRAIN[3:]], "--epochs 0", "--epochs 1 or more")
    _refused([*TINY_TRAIN, "--input-size", "3,3"], "--input-size 3,3")
    (tmp_path / "file").touch()
    _refused([*TINY_TRAIN, "--save", "file"], "--save file is a file")


def test_bench_refuses_a_bad_cell_before_the_first_row(tmp_path, tiny_baseline):
    grid = ["bench", "--baseline", str(tiny_baseline), "--methods", "l1,fgp", "--input-size", "32,48",
            "--out-dir", "grid"]
    _refused([*grid, "--ratios", "0.3,0.999999"], "cell l1 r0.999999", "out of reach")
    _refused([*grid, "--ratios", "0.3", "--option", "fgp:heat=bogus"], "heat=bogus")
    _refused([*grid, "--ratios", "0.3", "--input-size", "3,3"], "--input-size 3,3")
    trains = ["bench", "--methods", "l1", "--ratios", "0.97", "--model", "unet", "--width", "0.125",
              "--input-size", "32,48", "--out-dir", "grid"]  # the baseline it would train is checked too
    _refused(trains, "cell l1 r0.97", "out of reach")
    assert not (tmp_path / "grid").exists()


def test_eval_refuses_a_baseline_that_is_not_the_candidates_ancestor(tmp_path, tiny_baseline):
    def prune(ckpt, save, method="l1"):
        result = _cli([*PRUNE, "--ckpt", ckpt, "--global-ratio", "0.3", "--save", save, "--method", method])
        assert result.exit_code == 0, result.output
        return Store(os.environ["VSS_DB"]).list_runs(kind="prune")[0]

    first = prune(str(tiny_baseline), "p1")
    second = prune(first.id, "p2")  # pruned further, from the first
    other = tmp_path / "other.pt"  # pruned from the same baseline, other channels: a file the store does not know
    other.write_bytes((Path(prune(str(tiny_baseline), "p3", "random").out_dir) / "pruned.pt").read_bytes())
    evaluate = ["eval", "--input-size", "32,48", "--report", "r.json"]
    before = len(Store(os.environ["VSS_DB"]).list_runs())
    for base, cand, needles in [
        (first.id, str(tiny_baseline), ("look swapped", f"--baseline {tiny_baseline}")),
        (second.id, first.id, ("look swapped", f"--baseline {first.id} --candidate {second.id}")),
    ]:
        result = _cli([*evaluate, "--baseline", base, "--candidate", cand])
        assert result.exit_code == 2 and all(n in result.output for n in needles), result.output
    result = _cli([*evaluate, "--baseline", str(other), "--candidate", second.id])
    assert result.exit_code == 2 and "is not an ancestor" in result.output, result.output
    unrelated = _cli(["train", *TINY_TRAIN[1:], "--save", "t"])  # a run the store knows, same network
    assert unrelated.exit_code == 0, unrelated.output
    train = Store(os.environ["VSS_DB"]).list_runs(kind="train")[0]
    result = _cli([*evaluate, "--baseline", train.id, "--candidate", first.id])
    assert result.exit_code == 2 and f"baseline run {train.id} is not an ancestor" in result.output, result.output
    assert len(Store(os.environ["VSS_DB"]).list_runs()) == before + 1 and not Path("r.json").exists()


def test_eval_refuses_a_report_folder_before_evaluating(tmp_path, tiny_baseline, monkeypatch):
    import vss_cli.workflows.evaluate as evaluate

    monkeypatch.setattr(evaluate, "compare", lambda *a, **k: pytest.fail("evaluated before checking --report"))
    (tmp_path / "out").mkdir()
    _refused(["eval", "--baseline", str(tiny_baseline), "--candidate", str(tiny_baseline), "--input-size", "32,48",
              "--report", "out"], "--report out is a folder", "out/report.json")
