"""`--dataset folder` (issue 23 item 6): mmsegmentation's custom layout, checked like the other
formats, trained, pruned and evaluated with its classes and settings carried by the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_run import ok, vss
from vss_cli.data import build_dataset
from vss_cli.store import Store

SMALL = ["--model", "unet", "--width", "0.125", "--input-size", "32,48", "--batch-size", "4", "--device", "cpu"]


@pytest.fixture
def tree(tmp_path) -> Path:
    ok("data", "synth", "--out", "tree", "--format", "folder", "--n", "6", "--size", "32,48")
    return tmp_path / "tree"


def check_json(*args: str) -> tuple[int, dict]:
    result = vss("data", "check", "--format", "json", *args)
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {"error": result.output}


def test_synth_writes_the_mmseg_layout_and_check_finds_it_usable(tree):
    assert (tree / "classes.txt").read_text().split() == ["road", "sidewalk", "building", "pole", "vegetation",
                                                          "sky", "person", "car"]
    assert sorted(p.name for p in (tree / "img_dir" / "train").iterdir()) == \
        sorted(p.name for p in (tree / "ann_dir" / "train").iterdir())
    code, report = check_json("--data-root", str(tree))  # the layout names the format
    assert code == 0 and report["dataset"] == "folder" and report["usable"]
    assert [(c["split"], c["images"]) for c in report["counts"]] == [("train", 4), ("val", 1)]


def test_a_folder_dataset_goes_through_check_train_prune_eval(tree):
    ok("data", "check", "--dataset", "folder", "--data-root", str(tree))
    ok("train", "--dataset", "folder", "--data-root", str(tree), *SMALL, "--epochs", "1", "--save", "base")
    ok("prune", "--ckpt", "base/best.pt", "--method", "taylor", "--samples", "4", "--speed-check-iters", "0",
       "--save", "pruned")
    ok("eval", "--baseline", "base/best.pt", "--candidate", "pruned/pruned.pt", "--speed-iters", "1", "--warmup", "0",
       "--report", "report.json")
    report = json.loads(Path("report.json").read_text())
    assert report["dataset"] == "folder" and report["input_size"] == [32, 48]
    assert list(report["candidate_results"]["per_class_iou"])[:2] == ["road", "sidewalk"]  # classes.txt's names
    (train,) = Store(Path("vss.db").resolve()).list_runs(kind="train")
    assert train.config["dataset"] == "folder"


def _mask(tree: Path, split: str = "train", index: int = 0) -> Path:
    return tree / "ann_dir" / split / f"synth_{split}_{index:04d}.png"


def test_check_names_unpaired_files_values_outside_the_classes_sizes_and_rgb_masks(tree):
    (tree / "img_dir" / "train" / "synth_train_0000.png").rename(tree / "img_dir" / "train" / "lonely.png")
    Image.fromarray(np.full((32, 48), 9, np.uint8)).save(_mask(tree, index=1))  # 8 classes: 0..7 and 255
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(_mask(tree, index=2))
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(_mask(tree, "val"))
    code, report = check_json("--data-root", str(tree))
    assert code == 2
    problems = {f["path"]: f["problem"] for f in report["findings"] if f["severity"] == "error"}
    assert "image has no mask" in problems["img_dir/train/lonely.png"]
    assert "mask has no image" in problems["ann_dir/train/synth_train_0000.png"]
    assert "values 9 are outside" in problems["ann_dir/train/synth_train_0001.png"]
    assert "16x16" in problems["ann_dir/train/synth_train_0002.png"]
    assert "colour-coded" in problems["ann_dir/val/synth_val_0000.png"]
    result = vss("train", "--dataset", "folder", "--data-root", str(tree), *SMALL, "--epochs", "1")
    assert result.exit_code == 2 and Store(Path("vss.db").resolve()).list_runs() == []


def test_num_classes_ignore_index_and_suffixes_without_classes_txt(tree):
    (tree / "classes.txt").unlink()
    for mask in list((tree / "ann_dir").rglob("*.png")):
        values = np.array(Image.open(mask))
        values[values == 255] = 200  # this tree marks unlabelled pixels with 200
        Image.fromarray(values).save(mask.with_name(mask.stem + "_mask.png"))
        mask.unlink()
    code, report = check_json("--data-root", str(tree))
    assert code == 2 and "pass --num-classes N" in report["error"]  # no classes.txt and no --num-classes
    layout = ["--num-classes", "8", "--ignore-index", "200", "--seg-suffix", "_mask.png", "--img-suffix", ".png"]
    code, report = check_json("--data-root", str(tree), *layout)
    assert code == 0, report["findings"]
    code, report = check_json("--data-root", str(tree), "--num-classes", "8", "--seg-suffix", "_mask.png")
    assert code == 2 and "values 200 are outside" in json.dumps(report)  # 200 is not ignore by default
    ok("train", "--data-root", str(tree), *SMALL, *layout, "--epochs", "1", "--save", "base")
    ok("prune", "--ckpt", "base/best.pt", "--method", "l1", "--speed-check-iters", "0", "--save", "pruned")
    # the checkpoint carries the settings: eval needs none of the flags again
    ok("eval", "--baseline", "base/best.pt", "--candidate", "pruned/pruned.pt", "--speed-iters", "1", "--warmup", "0")


def test_the_ignore_index_and_unknown_values_become_the_engines_ignore(tree):
    from vss_cli.data import get_spec

    mask = _mask(tree, "val")
    values = np.array(Image.open(mask))
    values[0, :4] = [200, 7, 0, 255]
    Image.fromarray(values).save(mask)
    spec = get_spec("folder", tree, ignore_index=200)
    _, label = build_dataset(spec, "val", data_root=tree, input_size=(32, 48))[0]
    assert label[0, :4].tolist() == [255, 7, 0, 255]


def test_a_root_one_folder_off_names_the_fix(tree, tmp_path):
    result = vss("data", "check", "--data-root", str(tmp_path))
    assert result.exit_code == 2 and f"--data-root {tree}" in " ".join(result.output.split())
    result = vss("data", "check", "--data-root", str(tree / "img_dir"))
    assert result.exit_code == 2 and f"--data-root {tree}" in " ".join(result.output.split())


def test_a_bench_grid_trains_its_baseline_on_a_folder_tree(tree):
    ok("bench", "--data-root", str(tree), *SMALL, "--baseline-epochs", "1", "--methods", "l1", "--ratios", "0.3",
       "--finetune-epochs", "1", "--speed-iters", "1", "--warmup", "0", "--samples", "4", "--out-dir", "grid")
    summary = json.loads(Path("grid/benchmark_summary.json").read_text())
    assert summary["summary_stats"]["completed"] == 1
    (train,) = Store(Path("vss.db").resolve()).list_runs(kind="train")
    assert train.config["dataset"] == "folder"
