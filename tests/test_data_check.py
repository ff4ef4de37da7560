"""`vss data synth` / `vss data check` through the CLI: intact trees pass, each planted fault is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vss_cli.cli import output
from vss_cli.cli.app import app

runner = CliRunner()
CITY = "leftImg8bit/train/synthcity"
GT = "gtFine/train/synthcity"
FIRST = "synthcity_000000_000019"


@pytest.fixture(autouse=True)
def _isolated_db(tmp_path, monkeypatch):
    monkeypatch.setenv("VSS_DB", str(tmp_path / "vss.db"))


def vss(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """One small tree per format, written through the CLI."""
    base = tmp_path_factory.mktemp("trees")
    trees = {}
    for fmt in ("cityscapes", "camvid"):
        result = vss("data", "synth", "--out", base / fmt, "--format", fmt, "--n", "6", "--size", "32,64")
        assert result.exit_code == 0, result.output
        assert "wrote 6" in result.output
        trees[fmt] = base / fmt
    return trees


def check_json(root: Path, *extra: str) -> tuple[int, dict]:
    result = vss("data", "check", "--data-root", root, "--format", "json", *extra)
    return result.exit_code, json.loads(result.stdout)


def errors_by_path(report: dict) -> dict[str, str]:
    return {f["path"]: f["problem"] for f in report["findings"] if f["severity"] == "error"}


def test_synth_writes_the_real_layouts(pristine):
    cityscapes, camvid = pristine["cityscapes"], pristine["camvid"]
    assert (cityscapes / CITY / f"{FIRST}_leftImg8bit.png").is_file()
    assert (cityscapes / GT / f"{FIRST}_gtFine_labelIds.png").is_file()
    ids = np.array(Image.open(cityscapes / GT / f"{FIRST}_gtFine_labelIds.png"))
    assert set(np.unique(ids).tolist()) <= {0, 7, 8, 11, 17, 21, 23, 24, 26}
    for split in ("train", "val", "test"):
        assert sorted(p.name for p in (camvid / split).iterdir()) == sorted(
            p.name for p in (camvid / f"{split}annot").iterdir())
    labels = np.array(Image.open(next((camvid / "trainannot").iterdir())))
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3, 4, 5, 8, 9, 11}


@pytest.mark.parametrize("fmt", ["cityscapes", "camvid"])
def test_intact_tree_is_usable_and_format_is_inferred(pristine, fmt):
    code, report = check_json(pristine[fmt], "--split", "train,val,test")
    assert code == 0, report
    assert report["dataset"] == fmt and report["usable"] and report["errors"] == 0
    assert [c["split"] for c in report["counts"]] == ["train", "val", "test"]
    assert report["counts"][0]["images"] == 4
    assert any(f["severity"] == "warning" for f in report["findings"])  # fewer than the official sizes


def test_table_output_summarises_counts(pristine):
    result = vss("data", "check", "--dataset", "cityscapes", "--data-root", pristine["cityscapes"])
    assert result.exit_code == 0, result.output
    assert "usable" in result.stdout and "2975" in result.stdout


def _remove(path: Path) -> None:
    path.unlink()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


def _bad_value(path: Path) -> None:
    label = np.array(Image.open(path))
    label[0, :3] = 77
    Image.fromarray(label).save(path)


def _rgb(path: Path) -> None:
    Image.open(path).convert("RGB").save(path)


def _shrink(path: Path) -> None:
    Image.open(path).resize((20, 10), Image.NEAREST).save(path)


# (format, file to break relative to the root, how, file the finding names, words the problem contains)
FAULTS = {
    "missing label": ("cityscapes", f"{GT}/{FIRST}_gtFine_labelIds.png", _remove,
                      f"{CITY}/{FIRST}_leftImg8bit.png", f"{FIRST}_gtFine_labelIds.png"),
    "truncated png": ("cityscapes", f"{CITY}/{FIRST}_leftImg8bit.png", _truncate,
                      f"{CITY}/{FIRST}_leftImg8bit.png", "truncated"),
    "value outside set": ("cityscapes", f"{GT}/{FIRST}_gtFine_labelIds.png", _bad_value,
                          f"{GT}/{FIRST}_gtFine_labelIds.png", "77"),
    "rgb label": ("camvid", "trainannot/synth_train_0001.png", _rgb,
                  "trainannot/synth_train_0001.png", "single-channel"),
    "size mismatch": ("camvid", "valannot/synth_val_0000.png", _shrink,
                      "valannot/synth_val_0000.png", "20x10"),
    "camvid missing label": ("camvid", "trainannot/synth_train_0002.png", _remove,
                             "train/synth_train_0002.png", "trainannot/synth_train_0002.png"),
    "camvid label value": ("camvid", "trainannot/synth_train_0000.png", _bad_value,
                           "trainannot/synth_train_0000.png", "77"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_check_names_each_planted_fault_with_its_file(pristine, tmp_path, fault):
    fmt, target, breaker, named, words = FAULTS[fault]
    root = tmp_path / fmt
    shutil.copytree(pristine[fmt], root)
    breaker(root / target)
    code, report = check_json(root, "--dataset", fmt)
    assert code == 2
    assert not report["usable"]
    errors = errors_by_path(report)
    assert named in errors, errors
    assert words in errors[named]


def test_table_lists_every_problem_with_its_file(pristine, tmp_path, monkeypatch):
    root = tmp_path / "cityscapes"
    shutil.copytree(pristine["cityscapes"], root)
    _remove(root / GT / f"{FIRST}_gtFine_labelIds.png")
    _rgb(root / "gtFine/val/synthville/synthville_000000_000019_gtFine_labelIds.png")
    monkeypatch.setattr(output.console, "_width", 400)  # keep long paths on one line
    result = vss("data", "check", "--data-root", root)
    assert result.exit_code == 2
    assert f"{FIRST}_leftImg8bit.png" in result.stdout
    assert "synthville_000000_000019_gtFine_labelIds.png" in result.stdout
    assert "NOT usable" in result.stdout


@pytest.mark.parametrize("fmt, folder, renamed, expected", [
    ("cityscapes", "leftImg8bit", "leftImg8bits", "leftImg8bit"),
    ("camvid", "trainannot", "train_annot", "trainannot"),
])
def test_wrong_folder_name_is_named_with_the_fix(pristine, tmp_path, fmt, folder, renamed, expected):
    root = tmp_path / fmt
    shutil.copytree(pristine[fmt], root)
    (root / folder).rename(root / renamed)
    code, report = check_json(root)  # format still inferred from the near-miss name
    assert code == 2 and report["dataset"] == fmt
    problems = " ".join(errors_by_path(report).values())
    assert f"rename it to {expected}/" in problems and renamed in problems


def test_missing_data_root_is_one_line_and_exit_2(tmp_path):
    result = vss("data", "check", "--dataset", "cityscapes", "--data-root", tmp_path / "nowhere")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0] and "--data-root" in lines[0]
    inferred = vss("data", "check", "--data-root", tmp_path / "nowhere")
    assert inferred.exit_code == 2 and len(inferred.output.strip().splitlines()) == 1


def test_synthetic_is_always_usable():
    result = vss("data", "check", "--format", "json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["dataset"] == "synthetic" and report["usable"]
    assert "built-in" in report["findings"][0]["problem"]


def test_bad_options_exit_2(tmp_path):
    assert vss("data", "synth", "--out", tmp_path, "--format", "kitti").exit_code == 2
    assert vss("data", "synth", "--out", tmp_path, "--n", "2").exit_code == 2
    assert vss("data", "check", "--split", "train,holdout").exit_code == 2
