"""The first path through the CLI: train -> prune -> eval -> runs list / show, and bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.store import Store

TINY = ["--width", "0.125", "--input-size", "32,48", "--batch-size", "8", "--max-iters-per-epoch", "3",
        "--device", "cpu"]

runner = CliRunner()


def vss(*args: str):
    result = runner.invoke(app, list(args))
    return result


@pytest.fixture
def trained(tmp_path):
    result = vss("train", "--epochs", "1", *TINY)
    assert result.exit_code == 0, result.output
    store = Store(tmp_path / "vss.db")
    (run,) = store.list_runs(kind="train")
    return store, run


def test_train_prune_eval_and_lineage(trained, tmp_path):
    store, train = trained
    assert train.status == "completed"
    result = vss("prune", "--ckpt", train.id[:14], "--method", "l1", "--global-ratio", "0.3", "--input-size", "32,48",
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    (prune,) = store.list_runs(kind="prune")
    assert [(rel, r.id) for rel, r in store.parents(prune.id)] == [("pruned-from", train.id)]
    report = tmp_path / "eval.json"
    result = vss("eval", "--baseline", train.id, "--candidate", prune.id, "--report", str(report),
                 "--input-size", "32,48", "--speed-iters", "3", "--device", "cpu")
    assert result.exit_code == 0, result.output
    (ev,) = store.list_runs(kind="eval")
    assert sorted(rel for rel, _ in store.parents(ev.id)) == ["baseline-of", "evaluates"]
    data = json.loads(report.read_text())
    assert 0.0 < data["pruning_ratios"]["channel_prune_ratio"] < 1.0
    listed = vss("runs", "list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert {r["kind"] for r in rows} == {"train", "prune", "eval"}
    shown = vss("runs", "show", prune.id)
    assert shown.exit_code == 0 and train.id[:8] in shown.output


def test_the_same_seed_trains_the_same_weights(tmp_path):
    """--seed fixes the initial weights too, whatever the process's random state was before."""
    import torch

    from vss_cli.pruning.checkpoint import load_checkpoint

    for noise in (1, 2):
        torch.manual_seed(noise)  # what earlier work in the process left behind
        assert vss("train", "--epochs", "1", "--seed", "7", *TINY).exit_code == 0
    store = Store(tmp_path / "vss.db")
    first, second = (load_checkpoint(store.artifact_path(r.id)).model.state_dict() for r in store.list_runs(kind="train"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_prune_by_checkpoint_path_keeps_lineage(trained):
    store, train = trained
    path = store.artifact_path(train.id)
    result = vss("prune", "--ckpt", str(path), "--method", "random", "--global-ratio", "0.5", "--input-size", "32,48",
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    (prune,) = store.list_runs(kind="prune")
    assert [r.id for _, r in store.parents(prune.id)] == [train.id]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["prune", "--ckpt", "missing.pt", "--method", "l1"], "missing.pt"),
        (["prune", "--ckpt", "zzzzzz", "--method", "l1"], "zzzzzz"),
        (["eval", "--baseline", "nope.pt", "--candidate", "nope.pt"], "nope.pt"),
        (["prune", "--ckpt", "present.pt", "--global-ratio", "1.5"], "1.5"),  # options come before the file's content
        (["prune", "--ckpt", "present.pt", "--method", "magic"], "magic"),
        (["train", "--dataset", "cityscapes", "--data-root", "/does/not/exist"], "/does/not/exist"),
        (["train", "--model", "resnet9000"], "resnet9000"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_run(tmp_path, args, needle):
    (tmp_path / "present.pt").write_bytes(b"not read: a path is checked first, then the options")
    result = vss(*args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.output
    assert "Traceback" not in result.output
    assert Store(tmp_path / "vss.db").list_runs() == []


@pytest.mark.parametrize("fmt", ["cityscapes", "camvid"])
def test_train_on_a_real_format_tree(tmp_path, fmt):
    tree = tmp_path / fmt
    assert vss("data", "synth", "--out", str(tree), "--format", fmt, "--n", "6", "--size", "48,64").exit_code == 0
    assert vss("data", "check", "--dataset", fmt, "--data-root", str(tree)).exit_code == 0
    result = vss("train", "--dataset", fmt, "--data-root", str(tree), "--epochs", "1", "--model", "unet", *TINY)
    assert result.exit_code == 0, result.output
    (run,) = Store(tmp_path / "vss.db").list_runs(kind="train")
    assert run.status == "completed" and run.config["dataset"] == fmt


@pytest.mark.parametrize("command", [
    ["train"], ["data", "check"],
    ["prune", "--ckpt", "x.pt"], ["eval", "--baseline", "x.pt", "--candidate", "x.pt"], ["bench"],
])
@pytest.mark.parametrize("root", ["missing", "empty"])
def test_unusable_data_root_is_one_line_from_every_command(tmp_path, command, root):
    path = tmp_path / root
    if root == "empty":
        (path / "leftImg8bit" / "train").mkdir(parents=True)
        (path / "gtFine" / "train").mkdir(parents=True)
    result = vss(*command, "--dataset", "cityscapes", "--data-root", str(path))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert Store(tmp_path / "vss.db").list_runs() == []


def test_seed_guide_command_shapes(trained, tmp_path):
    """The research scripts' lines: prune/eval take --model, fine-tuning is `train --model-from`."""
    store, train = trained
    result = vss("prune", "--ckpt", train.id, "--model", "unet", "--method", "fpgm", "--global-ratio", "0.3",
                 "--input-size", "32,48", "--device", "cpu", "--save", str(tmp_path / "pruned_fpgm_30"))
    assert result.exit_code == 0, result.output
    (prune,) = store.list_runs(kind="prune")
    pruned = tmp_path / "pruned_fpgm_30" / prune.id / "pruned.pt"  # --save DIR holds one folder per run
    assert pruned.is_file()
    # the seed's name for the one run folder's file resolves to it (test_seed_chain covers several folders)
    result = vss("train", "--model-from", str(tmp_path / "pruned_fpgm_30" / "pruned_model.pt"), "--epochs", "1",
                 "--input-size", "32,48", "--batch-size", "8", "--max-iters-per-epoch", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    (ft,) = store.list_runs(kind="finetune")
    assert ft.config["model_from"] == str(pruned)
    assert [rel for rel, _ in store.parents(ft.id)] == ["finetuned-from"]
    wrong = vss("eval", "--model", "deeplabv3_resnet50", "--baseline", train.id, "--candidate", ft.id)
    assert wrong.exit_code == 2 and "deeplabv3_resnet50" in wrong.output
    assert store.list_runs(kind="eval") == []


def test_version_and_flags_shown_as_flags():
    version = vss("--version")
    assert version.exit_code == 0 and version.stdout.strip().startswith("vss 0.")
    shown = vss("train", "--help")
    assert shown.exit_code == 0 and "<bool>" not in shown.stdout and "--no-amp" in shown.stdout
    assert "<bool>" not in vss("runs", "list", "--help").stdout


@pytest.mark.parametrize("command", [("prune",), ("eval",), ("finetune",)])
def test_dataset_help_names_the_real_default(command):
    text = " ".join(vss(*command, "--help").stdout.replace("│", " ").split())
    assert "synthetic (default)" not in text and "recorded in the checkpoint" in text


def test_cuda_out_of_memory_gets_a_one_line_hint(monkeypatch):
    import torch

    import vss_cli.workflows.train as train_workflow

    def oom(*_a, **_k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_workflow, "train_run", oom)
    result = vss("train", "--epochs", "1")
    assert result.exit_code == 1
    hints = [line for line in result.output.splitlines() if line.startswith("hint:")]
    assert len(hints) == 1 and "--batch-size" in hints[0] and "--amp" in hints[0]


def test_quiet_is_a_progress_setting_not_an_environment_variable(monkeypatch):
    import os

    from vss_cli.engine import progress

    monkeypatch.delenv("VSS_QUIET", raising=False)
    assert vss("--quiet", "runs", "list").exit_code == 0
    assert progress.SETTINGS.quiet and progress.quiet() and "VSS_QUIET" not in os.environ
    assert vss("runs", "list").exit_code == 0
    assert not progress.quiet()


def test_a_value_after_a_flag_says_flags_take_none():
    result = vss("train", "--amp", "true")
    assert result.exit_code == 2 and "take no value" in " ".join(result.output.replace("│", " ").split())
