"""Model registry, every registered model (tiny variants), physical pruning, complexity, `vss models`."""

from __future__ import annotations

import json
from urllib.error import URLError

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp
import torchvision
from typer.testing import CliRunner

from vss_cli.engine.complexity import Complexity, count_complexity, format_count, model_complexity
from vss_cli.errors import ConfigError, VssError
from vss_cli.models import WeightsError, build_model, get_model_info, list_models, output_layer_names
from vss_cli.models.resnet import DEPTHS, ScalableResNet

MODELS = list_models()
NUM_CLASSES = 3
# torchvision's published figures (GFLOPS column = multiply-adds, aux head, 21 classes, 520x520)
TORCHVISION_GMACS = {"deeplabv3_resnet50": 178.72, "deeplabv3_resnet101": 258.74,
                     "fcn_resnet50": 152.72, "fcn_resnet101": 232.74}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and behaves on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def has_aux(name: str) -> bool:
    """Whether the model can build an aux head (LR-ASPP has none)."""
    return bool(get_model_info(name).structure.aux)


def tiny(name: str, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, NUM_CLASSES, **{**get_model_info(name).tiny_kwargs, **kw})


def all_outputs(outputs: dict) -> torch.Tensor:
    """Trace every head: with only "out" the aux head would be missing from the dependency graph."""
    return sum(v.sum() for v in outputs.values())


def dependency_graph(model: nn.Module) -> tp.DependencyGraph:
    return tp.DependencyGraph().build_dependency(
        model, example_inputs=torch.zeros(1, 3, 64, 64), output_transform=all_outputs, verbose=False)


def prune_every_group(model: nn.Module, name: str, ratio: float = 0.3) -> tp.DependencyGraph:
    """Remove `ratio` of the channels of every group except the output layers'; return the graph."""
    named = dict(model.named_modules())
    ignored = [named[n] for n in output_layer_names(name, model)]
    dg = dependency_graph(model)
    for group in dg.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.ConvTranspose2d]):
        size = len(group[0].idxs)
        n = int(size * ratio)
        if 0 < n < size:
            idxs = torch.randperm(size, generator=torch.Generator().manual_seed(size))[:n].tolist()
            dg.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, sorted(idxs)).prune()
    return dg


@pytest.mark.parametrize("aux_loss", [False, True])
@pytest.mark.parametrize("name", MODELS)
def test_forward_shape(name, aux_loss):
    if aux_loss and not has_aux(name):
        with pytest.raises(ConfigError, match="no auxiliary head"):
            tiny(name, aux_loss=True)
        return
    model = tiny(name, aux_loss=aux_loss).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 40, 56))
    assert set(out) == ({"out", "aux"} if aux_loss else {"out"})
    assert all(v.shape == (2, NUM_CLASSES, 40, 56) for v in out.values())
    structure = get_model_info(name).structure
    main = [n for n in structure.output_layers if structure.region_of(n) != "aux"]
    assert len(output_layer_names(name, model)) == len(main) + aux_loss


@pytest.mark.parametrize("name", MODELS)
def test_sgd_steps_lower_the_loss(name):
    model = tiny(name, aux_loss=has_aux(name)).train()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, NUM_CLASSES, (2, 32, 32), generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        out = model(images)
        loss = sum(w * F.cross_entropy(out[k], labels) for k, w in (("out", 1.0), ("aux", 0.5)) if k in out)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-2:]) < losses[0]


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip(name):
    source, target = tiny(name, seed=0).eval(), tiny(name, seed=1).eval()
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x)["out"], target(x)["out"])


@pytest.mark.parametrize("name", MODELS)
def test_physical_pruning_keeps_outputs_and_lowers_cost(name):
    model = tiny(name, aux_loss=has_aux(name)).eval()
    before = count_complexity(model, (64, 64))
    # counting on the meta device (what `vss models` does) gives the same numbers, aux head excluded
    assert model_complexity(name, NUM_CLASSES, (64, 64), **get_model_info(name).tiny_kwargs) == before
    dg = prune_every_group(model, name)
    after = count_complexity(model, (64, 64))
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        out = model(x)
    assert all(v.shape == (1, NUM_CLASSES, 48, 64) for v in out.values())
    assert set(out) == ({"out", "aux"} if has_aux(name) else {"out"})
    assert after.macs < 0.75 * before.macs and after.params < 0.75 * before.params

    # the history replays on a fresh graph: same architecture, same weights, same outputs
    fresh = tiny(name, seed=5, aux_loss=has_aux(name)).eval()
    dependency_graph(fresh).load_pruning_history(dg.pruning_history())
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x)["out"], out["out"])


def test_segnet_unpool_indices_follow_pruned_encoder():
    """Pruning one encoder stage alone must prune the decoder channels its indices unpool."""
    model = tiny("simple_segnet").eval()
    dg = dependency_graph(model)
    conv = model.encoder[2].convs[3]
    dg.get_pruning_group(conv, tp.prune_conv_out_channels, [0, 5, 7]).prune()
    assert model.decoder[3].convs[3].out_channels == conv.out_channels
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64))["out"].shape == (1, NUM_CLASSES, 64, 64)


def test_unknown_model_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="deeplabv3_resnet50"):
        build_model("nope", 3)
    with pytest.raises(ConfigError, match="depth"):
        build_model("unet", 3, depth=3)
    for bad in ({"width": 0}, {"width": -1.0}):
        with pytest.raises(ConfigError):
            build_model("unet", 3, **bad)
    with pytest.raises(ConfigError):
        build_model("unet", 0)
    with pytest.raises(ConfigError, match="backbone"):
        build_model("simple_segnet", 3, pretrained_backbone=True)
    with pytest.raises(ConfigError, match="width 1.0"):
        build_model("fcn_resnet50", 3, width=0.5, pretrained_backbone=True)


def test_scalable_resnet_is_torchvisions_at_width_one():
    with torch.device("meta"):
        for depth, reference in ((50, torchvision.models.resnet50), (101, torchvision.models.resnet101)):
            ours, theirs = ScalableResNet(DEPTHS[depth]).state_dict(), reference().state_dict()
            assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()]
        tv = torchvision.models.segmentation.deeplabv3_resnet50(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=True).state_dict()
        ours = build_model("deeplabv3_resnet50", 21, aux_loss=True).state_dict()
        assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in tv.items()]
        assert ScalableResNet(DEPTHS[50], width=0.125).conv1.out_channels == 8


def test_pretrained_backbone_offline_is_a_one_line_error(monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match="could not be downloaded.*--backbone-weights") as info:
        build_model("deeplabv3_resnet50", 3, pretrained_backbone=True)
    assert isinstance(info.value, VssError) and "\n" not in str(info.value)


def test_backbone_weights_file(tmp_path):
    backbone = ScalableResNet(DEPTHS[50], width=0.125)
    path = tmp_path / "r50.pth"
    torch.save(backbone.state_dict(), path)
    model = build_model("fcn_resnet50", 3, width=0.125, backbone_weights=str(path))
    assert torch.equal(model.backbone.layer4[2].conv3.weight, backbone.layer4[2].conv3.weight)
    with pytest.raises(WeightsError, match="do not fit"):
        build_model("fcn_resnet50", 3, width=0.25, backbone_weights=str(path))
    with pytest.raises(VssError, match="do not exist"):
        build_model("fcn_resnet50", 3, backbone_weights=str(tmp_path / "missing.pth"))


def test_count_complexity_is_clean_and_excludes_aux():
    model = tiny("deeplabv3_resnet50", aux_loss=True).train()
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    attrs = {id(m): set(vars(m)) for m in model.modules()}
    first, second = count_complexity(model, (64, 64)), count_complexity(model, (64, 64))
    assert first == second and first.backend == "aten" and first.flops == 2 * first.macs
    assert first == count_complexity(tiny("deeplabv3_resnet50"), (64, 64))
    assert count_complexity(model, (64, 64), include_aux=True).macs > first.macs
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
    assert {id(m): set(vars(m)) for m in model.modules()} == attrs
    assert model.training and model.aux_classifier is not None
    assert model(torch.randn(2, 3, 32, 32))["aux"].shape == (2, NUM_CLASSES, 32, 32)


def test_format_count():
    assert format_count(182_300_000_000) == "182.30G"
    assert format_count(39_600_000) == "39.60M"
    assert Complexity(macs=1500, params=12).macs_str == "1.50K"


def _vss_models(args, tmp_path, monkeypatch):
    from vss_cli.cli.app import app

    monkeypatch.setenv("VSS_DB", str(tmp_path / "vss.db"))
    result = CliRunner().invoke(app, ["models", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_vss_models_json(tmp_path, monkeypatch):
    rows = _vss_models(["--input-size", "64,64", "--width", "0.125", "--format", "json"], tmp_path, monkeypatch)
    assert [r["model"] for r in rows] == MODELS
    assert all(r["macs"] > 0 and r["params"] > 0 and r["backend"] == "aten" for r in rows)


def test_vss_models_matches_torchvision_published_macs(tmp_path, monkeypatch):
    rows = _vss_models(["--input-size", "520,520", "--aux-loss", "--format", "json"], tmp_path, monkeypatch)
    for row in rows:
        if row["model"] in TORCHVISION_GMACS:
            assert row["macs"] / 1e9 == pytest.approx(TORCHVISION_GMACS[row["model"]], rel=0.005)


@pytest.mark.heavy
@pytest.mark.parametrize("name", list(TORCHVISION_GMACS))
def test_full_width_real_count_matches_torchvision(name):
    model = build_model(name, 21, aux_loss=True)
    macs = count_complexity(model, (520, 520), include_aux=True).macs
    assert macs / 1e9 == pytest.approx(TORCHVISION_GMACS[name], rel=0.005)
