"""`vss predict`: panel sizes, palette-only prediction pixels, the contact sheet, the run and its edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.data import get_spec
from vss_cli.engine.checkpoint import ModelSpec, save_checkpoint
from vss_cli.models import build_model, get_model_info
from vss_cli.report import panels as pn
from vss_cli.store import Store

SIZE = (32, 48)
runner = CliRunner()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tiny_pruned_unet) -> dict[str, Path]:
    """A tiny random U-Net on synthetic data and a 50% l1-pruned copy biased towards one class."""
    root = tmp_path_factory.mktemp("predict_ckpts")
    model, pruned, mspec, history, spec = tiny_pruned_unet(0.5, SIZE)
    base = save_checkpoint(root / "base.pt", model=model, spec=mspec, dataset=spec.to_dict())
    head = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == spec.num_classes][-1]
    with torch.no_grad():
        head.bias[2] += 50.0  # the candidate says "building" everywhere: the panels must show the difference
    cand = save_checkpoint(root / "pruned.pt", model=pruned, spec=mspec, history=history, dataset=spec.to_dict())
    return {"base": base, "pruned": cand}


def _colours(picture: Image.Image, box) -> set[tuple[int, int, int]]:
    pixels = np.asarray(picture.crop(box).convert("RGB")).reshape(-1, 3)
    return {tuple(int(v) for v in c) for c in np.unique(pixels, axis=0)}


def test_predict_with_candidate_draws_palette_panels_and_records_the_run(ckpts, tmp_path):
    with Store(tmp_path / "vss.db") as store:
        runs = {}
        for name in ("base", "pruned"):
            runs[name] = store.create_run(kind="train", config={"name": name}, status="completed")
            store.add_artifact(runs[name].id, kind="checkpoint", path=ckpts[name])
    out = tmp_path / "pred"
    result = runner.invoke(app, ["--threads", "1", "predict", "--ckpt", runs["base"].id, "--candidate",
                                 runs["pruned"].id, "--n", "3", "--input-size", "32,48", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (out,) = out.iterdir()  # --out DIR holds one folder per run
    spec = get_spec("synthetic")
    palette = {tuple(c) for c in spec.palette}
    panels = sorted(out.glob("*_panel.png"))
    assert len(panels) == 3
    width, height = pn.panel_size(*SIZE, tiles=5)
    assert (width, height) == (5 * 192 + 4 * pn.GAP, 4 * 32 + pn.TITLE_HEIGHT)
    boxes = pn.tile_boxes(*SIZE, tiles=5)
    differ = 0
    for path in panels:
        with Image.open(path) as picture:
            assert picture.size == (width, height)
            for box in boxes[2:4]:  # baseline and candidate predictions: palette colours only
                assert _colours(picture, box) <= palette
            assert _colours(picture, boxes[1]) <= palette | {pn.IGNORE_COLOUR}  # ground truth
            differ += len(_colours(picture, boxes[4]) & {pn.LOST, pn.GAINED, pn.BOTH_WRONG})
    assert differ > 0, "the pruned model predicts exactly like the baseline: the differ tile shows nothing"
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size == (width, pn.TITLE_HEIGHT + 3 * height + 2 * pn.GAP)
    with Image.open(out / "val_000_candidate.png") as overlay:
        assert overlay.size == (SIZE[1], SIZE[0])
    with Store(tmp_path / "vss.db") as store:
        (run,) = store.list_runs(kind="predict")
        assert run.status == "completed"
        kinds = sorted(a.kind for a in store.artifacts(run.id))
        assert kinds == ["contact-sheet"] + ["panel"] * 3 + ["prediction"] * 6
        assert {(rel, p.id) for rel, p in store.parents(run.id)} == {
            ("baseline-of", runs["base"].id), ("evaluates", runs["pruned"].id)}


def test_predict_on_a_folder_of_images_without_candidate(ckpts, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 60, 3), 60 * i, dtype=np.uint8)).save(folder / f"p{i}.jpg")
    result = runner.invoke(app, ["predict", "--ckpt", str(ckpts["base"]), "--images", str(folder),
                                 "--input-size", "32,48", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    with Image.open(next((tmp_path / "o").iterdir()) / "p0_panel.png") as picture:
        assert picture.size == pn.panel_size(*SIZE, tiles=2)  # image · prediction
        assert _colours(picture, pn.tile_boxes(*SIZE, tiles=2)[1]) <= {tuple(c) for c in get_spec("synthetic").palette}


@pytest.mark.parametrize("args", [["--n", "0"], ["--split", "dev"], ["--images", "missing_dir"],
                                  ["--candidate", "nope.pt"],
                                  ["--split", "val", "--images", "."]])
def test_bad_input_exits_2_without_a_run(ckpts, tmp_path, args):
    result = runner.invoke(app, ["predict", "--ckpt", str(ckpts["base"]), *args])
    assert result.exit_code == 2, result.output
    with Store(tmp_path / "vss.db") as store:
        assert store.list_runs(kind="predict") == []


def test_colourise_uses_the_palette_and_black_for_ignore():
    spec = get_spec("cityscapes")
    labels = np.array([[0, 18, 255], [5, -1, 19]])
    colours = pn.colourise(labels, spec.palette)
    assert tuple(colours[0, 0]) == (128, 64, 128) and tuple(colours[0, 1]) == (119, 11, 32)
    assert tuple(colours[1, 0]) == (153, 153, 153)
    assert [tuple(colours[0, 2]), tuple(colours[1, 1]), tuple(colours[1, 2])] == [pn.IGNORE_COLOUR] * 3


def test_predict_panels_is_the_workflow_bench_calls(ckpts, tmp_path):
    from vss_cli.workflows.predict import predict_panels

    with Store(tmp_path / "vss.db") as store:
        outcome = predict_panels(ckpts["base"], ckpts["pruned"], 2, tmp_path / "cell", store, input_size=SIZE,
                                 device="cpu")
        assert [p.name for p in outcome.panels] == ["val_000_panel.png", "val_001_panel.png"]
        assert outcome.contact_sheet == (tmp_path / "cell" / outcome.run_id / "contact_sheet.png").resolve()
        assert store.get_run(outcome.run_id).config["n"] == 2


def test_predict_on_camvid_uses_the_segnet_palette(tmp_path):
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "camvid"), "--format", "camvid",
                                 "--n", "3", "--size", "32,48"])
    assert result.exit_code == 0, result.output
    spec, kw = get_spec("camvid"), get_model_info("unet").tiny_kwargs
    torch.manual_seed(0)
    model = build_model("unet", spec.num_classes, **kw).eval()
    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == spec.num_classes][-1]
    with torch.no_grad():
        head.bias[2] = 50.0  # "Pole" everywhere
    ckpt = save_checkpoint(tmp_path / "camvid.pt", model=model, spec=ModelSpec("unet", spec.num_classes, kw),
                           dataset={**spec.to_dict(), "data_root": str(tmp_path / "camvid")})
    out = tmp_path / "o"
    result = runner.invoke(app, ["predict", "--ckpt", str(ckpt), "--n", "1", "--input-size", "32,48",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    (panel,) = out.glob("*/*_panel.png")
    with Image.open(panel) as picture:
        assert _colours(picture, pn.tile_boxes(*SIZE, tiles=3)[2]) == {(192, 192, 128)}  # SegNet's Pole colour
        assert _colours(picture, pn.tile_boxes(*SIZE, tiles=3)[1]) <= {tuple(c) for c in spec.palette} | {
            pn.IGNORE_COLOUR}
