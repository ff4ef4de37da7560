"""The seed guide's command lines carry through (issue 25): `--save DIR` then `DIR/best.pt` /
`DIR/pruned_model.pt`, the input size inherited from the checkpoint, the FAQ's bench resume command,
and label files of the wrong kind refused (exit 2) before any run row exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_run import ok, vss
from vss_cli.errors import CheckpointError
from vss_cli.store import Store
from vss_cli.workflows.paths import resolve_checkpoint

SIZE = "32,64"
# the guide's own flags; only the sizes are small (unet at width 1/8 stands in for deeplabv3_resnet50)
TRAIN = ["--dataset", "cityscapes", "--data-root", "data", "--batch-size", "2", "--weight-decay", "1e-4",
         "--scheduler", "poly", "--num-workers", "0"]


def runs(kind: str | None = None) -> list:
    return Store(Path("vss.db").resolve()).list_runs(kind=kind)


@pytest.fixture
def tree(tmp_path):
    ok("data", "synth", "--out", "data", "--format", "cityscapes", "--n", "6", "--size", SIZE, "--train-ids")
    return tmp_path / "data"


def test_the_guides_chain_runs_with_its_own_paths(tree):
    ok("train", *TRAIN, "--model", "unet", "--width", "0.125", "--input-size", SIZE, "--epochs", "1", "--lr", "0.01",
       "--save", "./runs/cityscapes_deeplabv3_baseline")
    ok("prune", "--dataset", "cityscapes", "--data-root", "data", "--model", "unet",
       "--ckpt", "./runs/cityscapes_deeplabv3_baseline/best.pt", "--method", "fpgm", "--global-ratio", "0.3",
       "--save", "./runs/pruned_fpgm_30", "--samples", "4", "--speed-check-iters", "2")
    (prune,) = runs("prune")
    assert prune.config["input_size"] == [32, 64]  # inherited from the baseline, not cityscapes' 512x1024
    ok("train", *TRAIN, "--model-from", "./runs/pruned_fpgm_30/pruned_model.pt", "--epochs", "1", "--lr", "0.005",
       "--save", "./runs/finetuned_fpgm_30")
    (finetune,) = runs("finetune")
    assert finetune.config["input_size"] == [32, 64]
    ok("eval", "--dataset", "cityscapes", "--data-root", "data", "--model", "unet",
       "--baseline", "./runs/cityscapes_deeplabv3_baseline/best.pt", "--candidate", "./runs/finetuned_fpgm_30/best.pt",
       "--report", "./runs/finetuned_fpgm_30/evaluation_report.json", "--batch-size", "2", "--input-size", SIZE,
       "--oracle-samples", "2", "--speed-iters", "2", "--warmup", "1")
    report = json.loads(Path("runs/finetuned_fpgm_30/evaluation_report.json").read_text())
    assert report["input_size"] == [32, 64] and "miou_retention" in report
    grid = ["--dataset", "cityscapes", "--data-root", "data", "--model", "unet",
            "--baseline", "./runs/cityscapes_deeplabv3_baseline/best.pt", "--methods", "l1,random", "--ratios", "0.3",
            "--out-dir", "./runs/full_benchmark", "--batch-size", "2", "--input-size", SIZE, "--skip-existing"]
    ok("bench", *grid, "--prepare-only")  # an unfinished grid: recorded, no cell run yet
    trains_before = len(runs("train"))
    ok("bench", "--skip-existing", "--out-dir", "./runs/full_benchmark")  # the FAQ's resume command
    assert len(runs("train")) == trains_before  # no new baseline
    (bench,) = runs("bench")
    summary = json.loads(Path("runs/full_benchmark/benchmark_summary.json").read_text())
    assert summary["bench_run"] == bench.id and summary["summary_stats"]["completed"] == 2
    cells = len(runs("prune"))
    ok("bench", "--skip-existing", "--out-dir", "./runs/full_benchmark")
    assert len(runs("prune")) == cells  # a finished grid reruns nothing


def _swap(tree: Path, kind: str) -> None:
    """Give the label files the other kind's name: train ids in *_labelIds.png, or raw ids in *_labelTrainIds.png."""
    gt = tree / "gtFine"
    if kind == "train ids named labelIds":
        for f in gt.rglob("*_labelIds.png"):
            f.unlink()
        for f in gt.rglob("*_labelTrainIds.png"):
            f.replace(f.with_name(f.name.replace("labelTrainIds", "labelIds")))
    else:
        for f in gt.rglob("*_labelTrainIds.png"):
            f.unlink()
        for f in gt.rglob("*_labelIds.png"):
            f.replace(f.with_name(f.name.replace("labelIds", "labelTrainIds")))


SWAPS = {"train ids named labelIds": "holds train ids", "raw ids named labelTrainIds": "holds raw label ids"}


@pytest.mark.parametrize("kind", SWAPS)
def test_swapped_label_files_stop_train_and_bench_before_any_row(tree, kind):
    _swap(tree, kind)
    small = ["--model", "unet", "--width", "0.125", "--input-size", SIZE]
    for command in (["train", *TRAIN, *small, "--epochs", "1"],
                    ["bench", "--data-root", "data", *small, "--methods", "l1", "--ratios", "0.3",
                     "--baseline-epochs", "1"]):
        result = vss(*command)
        assert result.exit_code == 2, result.output
        assert SWAPS[kind] in result.output and "synthcity_000000_000019_gtFine_label" in result.output
        assert runs() == []


def test_swapped_label_files_stop_eval_and_finetune_before_any_row(tree, tmp_path):
    ok("train", *TRAIN, "--model", "unet", "--width", "0.125", "--input-size", SIZE, "--epochs", "1",
       "--max-iters-per-epoch", "1", "--save", "base")
    ok("prune", "--ckpt", "base/best.pt", "--method", "l1", "--global-ratio", "0.3", "--save", "pruned",
       "--speed-check-iters", "0")
    before = len(runs())
    _swap(tree, "train ids named labelIds")
    result = vss("eval", "--baseline", "base/best.pt", "--candidate", "pruned/pruned.pt", "--speed-iters", "1")
    assert result.exit_code == 2 and SWAPS["train ids named labelIds"] in result.output, result.output
    result = vss("finetune", "--model-from", "pruned/pruned.pt", "--epochs", "1")
    assert result.exit_code == 2 and SWAPS["train ids named labelIds"] in result.output, result.output
    assert len(runs()) == before


def test_train_ids_without_ignore_pixels_in_labelids_files_are_refused(tree):
    _swap(tree, "train ids named labelIds")
    for label in (tree / "gtFine").rglob("*_labelIds.png"):
        values = np.array(Image.open(label))
        values[values == 255] = 0  # no ignore pixel left: every value is a valid label id
        Image.fromarray(values).save(label)
    code = vss("data", "check", "--data-root", "data").exit_code
    result = vss("train", *TRAIN, "--model", "unet", "--width", "0.125", "--input-size", SIZE, "--epochs", "1")
    assert code == 2 and result.exit_code == 2 and "no checked *_gtFine_labelIds.png holds an id above 18" in \
        " ".join(result.output.split())
    assert runs() == []


def _fake_run_file(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True)
    (folder / name).write_bytes(b"x")
    return folder / name


def test_a_seed_path_resolves_to_the_only_run_folder_and_lists_several(tmp_path):
    store = Store(tmp_path / "vss.db")
    only = _fake_run_file(tmp_path / "pruned_fpgm_30" / "01aaaa", "pruned.pt")
    assert resolve_checkpoint(store, str(tmp_path / "pruned_fpgm_30" / "pruned_model.pt")).path == only
    assert resolve_checkpoint(store, str(tmp_path / "pruned_fpgm_30" / "pruned.pt")).path == only
    _fake_run_file(tmp_path / "pruned_fpgm_30" / "01bbbb", "pruned.pt")
    with pytest.raises(CheckpointError, match="holds 2 runs' checkpoints: pass one of .*01aaaa/pruned.pt, .*01bbbb"):
        resolve_checkpoint(store, str(tmp_path / "pruned_fpgm_30" / "pruned_model.pt"))


def test_eval_names_every_missing_checkpoint_at_once():
    result = vss("eval", "--baseline", "runs/a/best.pt", "--candidate", "runs/b/best.pt")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "--baseline runs/a/best.pt does not exist" in text and "--candidate runs/b/best.pt does not exist" in text


def test_bench_out_dir_of_another_grid_names_the_join_command(tree):
    ok("train", *TRAIN, "--model", "unet", "--width", "0.125", "--input-size", SIZE, "--epochs", "1",
       "--max-iters-per-epoch", "1", "--save", "b")
    grid = ["--baseline", "b/best.pt", "--ratios", "0.3", "--out-dir", "out", "--input-size", SIZE]
    ok("bench", *grid, "--methods", "l1", "--prepare-only")
    (bench,) = runs("bench")
    result = vss("bench", *grid, "--methods", "random")
    assert result.exit_code == 2
    assert f"vss bench --join {bench.id}" in " ".join(result.output.split())


def test_a_label_file_of_the_wrong_size_is_named(tree):
    label = next((tree / "gtFine" / "val").rglob("*_labelTrainIds.png"))  # what vss reads when both kinds exist
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(label)
    result = vss("train", *TRAIN, "--model", "unet", "--width", "0.125", "--input-size", SIZE, "--epochs", "1")
    assert result.exit_code == 2 and label.name in result.output and "16x16" in result.output
    assert runs() == []


BAD_PATHS = [["prune", "--ckpt", "nowhere/best.pt"], ["train", "--data-root", "nowhere"],
             ["eval", "--baseline", "a/best.pt", "--candidate", "b/best.pt"], ["bench", "--baseline", "nowhere/best.pt"],
             ["data", "check", "--data-root", "nowhere"]]


def test_a_bad_path_fails_before_torch_is_imported():
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from vss_cli.cli.app import app; "
            f"print([CliRunner().invoke(app, args).exit_code for args in {BAD_PATHS!r}], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[-2] == f"{[2] * len(BAD_PATHS)} False"


def test_a_research_checkpoint_given_to_ckpt_suggests_vss_import(tmp_path):
    import torch

    torch.save({"conv.weight": torch.zeros(2, 3, 1, 1)}, tmp_path / "best_model.pth")  # a plain state_dict
    result = vss("prune", "--ckpt", "best_model.pth")
    assert result.exit_code == 2 and "vss import best_model.pth --model" in " ".join(result.output.split())
