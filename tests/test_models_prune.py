"""Issue 23's done-when matrix: every registered model, smp's Unet / FPN / PSPNet / DeepLabV3Plus over
a ResNet and a MobileNet encoder, and torchvision's mobile segmenters prune at 0.3 of MACs under
`--budget macs` (achieved within ±0.02), keep their output shape, and reload bit-identically in a
fresh process.

Split to keep the suite fast: every model with `l1`, and every method (l1, fpgm, taylor, sirfp) on
one smp model and one torchvision mobile segmenter; the whole models × methods matrix is `heavy`.
Widths, encoders and inputs are tiny; nothing downloads (smp encoders start random).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vss_cli.engine.checkpoint import ModelSpec, save_checkpoint
from vss_cli.engine.complexity import count_complexity
from vss_cli.models import build_model, get_model_info, list_models
from vss_cli.pruning.registry import get_method
from vss_cli.pruning.surgery import output_layers_of
from vss_cli.workflows.options import PruneOptions
from vss_cli.workflows.prune import prune_model

pytest.importorskip("segmentation_models_pytorch")
torch.set_num_threads(1)

CLASSES = 5
SIZE = (64, 64)
RATIO = 0.3
METHODS = ("l1", "fpgm", "taylor", "sirfp")
# smp at test size: a resnet18 / mobilenet_v2 encoder (random), a narrow decoder where the architecture has one
SMP_OPTIONS = {"Unet": {"decoder_channels": [32, 16, 16, 8, 8]}, "FPN": {"decoder_pyramid_channels": 64,
               "decoder_segmentation_channels": 64}, "PSPNet": {"psp_out_channels": 64},
               "DeepLabV3Plus": {"decoder_channels": 64}}
SMP = {f"smp:{arch}:{encoder}": options for arch, options in SMP_OPTIONS.items()
       for encoder in ("resnet18", "mobilenet_v2")}
MODELS = {**{name: get_model_info(name).tiny_kwargs for name in list_models()}, **SMP}
RELOAD = """
import sys, torch
torch.set_num_threads(1)
from vss_cli.pruning.checkpoint import load_checkpoint
x = torch.load(sys.argv[1])
out = {}
for path in sys.argv[3:]:
    with torch.no_grad():
        out[path] = load_checkpoint(path).model(x)["out"]
torch.save(out, sys.argv[2])
"""


def batches():
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        yield torch.randn(2, 3, *SIZE, generator=g), torch.randint(0, CLASSES, (2, *SIZE), generator=g)


def prune(name: str, method: str) -> tuple[torch.nn.Module, object, list]:
    torch.manual_seed(0)
    model = build_model(name, CLASSES, **MODELS[name]).eval()
    opts = PruneOptions(method=method, global_ratio=RATIO, budget="macs", round_to=1, samples=4, batch_size=2)
    report, history = prune_model(model, name, get_method(method), opts, input_size=SIZE, device="cpu",
                                  batch_source=batches, fit=None, num_classes=CLASSES, ignore_index=255,
                                  count=lambda m: count_complexity(m, SIZE))
    return model, report, history


def reload_in_fresh_process(paths: list[Path], x: torch.Tensor, tmp_path: Path) -> dict[str, torch.Tensor]:
    torch.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path / "x.pt"), str(tmp_path / "out.pt"),
                    *map(str, paths)], check=True, timeout=600)
    return torch.load(tmp_path / "out.pt")


def check_pruned(name: str, method: str, tmp_path: Path) -> tuple[Path, torch.Tensor]:
    """Prune; assert the MACs hit the target, the classifiers and output shape are kept; save."""
    model, report, history = prune(name, method)
    assert report.macs_reduction == pytest.approx(RATIO, abs=0.02), (name, method, report.macs_reduction)
    assert all(m.out_channels == CLASSES for m in output_layers_of(model, name) if hasattr(m, "out_channels"))
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(x)["out"]
    assert out.shape == (2, CLASSES, *SIZE)
    path = save_checkpoint(tmp_path / f"{name.replace(':', '_')}-{method}.pt", model=model,
                           spec=ModelSpec(name, CLASSES, MODELS[name]), history=history)
    return path, out


def assert_matrix(cases: list[tuple[str, str]], tmp_path: Path) -> None:
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(3))
    expected = dict(check_pruned(name, method, tmp_path) for name, method in cases)
    reloaded = reload_in_fresh_process(list(expected), x, tmp_path)
    for path, out in expected.items():
        assert torch.equal(reloaded[str(path)], out), path


def test_every_model_prunes_with_l1_and_reloads_in_a_fresh_process(tmp_path):
    assert_matrix([(name, "l1") for name in MODELS], tmp_path)


def test_every_method_on_an_smp_and_a_mobile_model(tmp_path):
    assert_matrix([(name, method) for name in ("smp:DeepLabV3Plus:mobilenet_v2", "lraspp_mobilenet_v3_large")
                   for method in METHODS if method != "l1"], tmp_path)


@pytest.mark.heavy
@pytest.mark.parametrize("method", METHODS)
def test_every_model_with_every_method(method, tmp_path):
    assert_matrix([(name, method) for name in MODELS], tmp_path)


def test_smp_checkpoints_record_smp_and_its_version(tmp_path):
    import segmentation_models_pytorch as smp

    from vss_cli.engine.checkpoint import read_checkpoint

    path, _ = check_pruned("smp:Unet:resnet18", "l1", tmp_path)
    source = read_checkpoint(path)["model"]["source"]
    assert source == {"source": "smp", "requires": {"segmentation-models-pytorch": smp.__version__}}
