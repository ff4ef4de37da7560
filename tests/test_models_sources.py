"""Models from outside the registry: import paths (a module of this test), entry points, smp names,
the structure a factory declares or vss derives, and replay refusing missing or changed code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from vss_cli.engine.checkpoint import ModelSpec, read_checkpoint, save_checkpoint
from vss_cli.errors import CheckpointError, ConfigError
from vss_cli.models import ModelStructure, build_model, declared_structure, model_provenance
from vss_cli.pruning.checkpoint import load_checkpoint

torch.set_num_threads(1)

# a small custom encoder-decoder, as a user's package would define it (returns a bare tensor)
NETS = textwrap.dedent('''
    import torch.nn as nn
    import torch.nn.functional as F

    __version__ = "{version}"


    def block(i, o, stride=1):
        return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


    class TinyNet(nn.Module):
        def __init__(self, num_classes, base=8):
            super().__init__()
            self.encoder = nn.Sequential(block(3, base, 2), block(base, 2 * base, 2), block(2 * base, 2 * base))
            self.decoder = nn.Sequential(block(2 * base, base))
            self.segmentation_head = nn.Conv2d(base, num_classes, 1)

        def forward(self, x):
            y = self.segmentation_head(self.decoder(self.encoder(x)))
            return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


    def build_tiny(num_classes, base=8):
        return TinyNet(num_classes, base)


    class Plain(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.stem = block(3, 8)
            self.last = nn.Conv2d(8, num_classes, 1)

        def forward(self, x):
            return {{"out": self.last(self.stem(x))}}


    def build_declared(num_classes):
        from vss_cli.models import ModelStructure
        return Plain(num_classes), ModelStructure(backbone=("stem",), head=("last",), output_layers=("last",))


    def build_undeclared(num_classes):
        return Plain(num_classes)
''')


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """`tinynets` importable here and in subprocesses (PYTHONPATH), at version 1.0."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "tinynets.py").write_text(NETS.format(version="1.0"))
    monkeypatch.syspath_prepend(str(folder))
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), str(repo), os.environ.get("PYTHONPATH", "")]))
    yield folder
    sys.modules.pop("tinynets", None)


def test_import_path_builds_wraps_and_derives_the_structure(nets):
    model = build_model("tinynets:build_tiny", 5, base=4).eval()
    assert model(torch.zeros(1, 3, 32, 48))["out"].shape == (1, 5, 32, 48)
    structure = declared_structure(model)
    assert structure.backbone == ("net.encoder",) and structure.head == ("net.decoder", "net.segmentation_head")
    assert structure.output_layers == ("net.segmentation_head",)
    assert model.vss_source == {"source": "import", "import_path": "tinynets:build_tiny", "module_version": "1.0"}


def test_a_factory_may_return_its_structure_and_a_bare_one_is_refused(nets):
    model = build_model("tinynets:build_declared", 3)
    assert declared_structure(model) == ModelStructure(backbone=("net.stem",), head=("net.last",),
                                                       output_layers=("net.last",))
    with pytest.raises(ConfigError, match="declares no structure"):
        build_model("tinynets:build_undeclared", 3)


@pytest.mark.parametrize("name, message", [
    ("nosuchpkg.nets:build", "cannot be imported"),
    ("tinynets:nothing", "has no nothing"),
    ("smp:Unet", "is not smp:ARCH:ENCODER"),
    ("smp:NoNet:resnet18", "smp has no architecture"),
    ("smp:Unet:nosuchencoder", "smp has no encoder"),
    ("no-such-model", "unknown model"),
])
def test_bad_names_are_one_line_errors(nets, name, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_model(name, 3)
    assert "\n" not in str(info.value)


def test_bad_options_are_one_line_errors(nets):
    with pytest.raises(ConfigError, match="does not take"):
        build_model("tinynets:build_tiny", 3, depth=2)
    pytest.importorskip("segmentation_models_pytorch")
    with pytest.raises(ConfigError, match="--pretrained-backbone"):
        build_model("smp:Unet:resnet18", 3, encoder_weights="imagenet")
    with pytest.raises(ConfigError, match="no --width"):
        build_model("smp:Unet:resnet18", 3, width=0.5)


def test_smp_fpn_keeps_its_groupnorm_groups_whole():
    pytest.importorskip("segmentation_models_pytorch")
    model = build_model("smp:FPN:resnet18", 3, decoder_pyramid_channels=32, decoder_segmentation_channels=32)
    never = declared_structure(model).never_prune
    assert never and all(isinstance(model.get_submodule(n), nn.GroupNorm) for n in never)


def test_pspnet_drops_the_encoder_stages_it_never_uses():
    pytest.importorskip("segmentation_models_pytorch")
    model = build_model("smp:PSPNet:mobilenet_v2", 3, psp_out_channels=32)
    assert isinstance(model.net.encoder.features[-1][0], nn.Identity)
    assert model.eval()(torch.zeros(1, 3, 64, 64))["out"].shape == (1, 3, 64, 64)


def save_tiny(tmp_path: Path) -> Path:
    model = build_model("tinynets:build_tiny", 5, base=4)
    return save_checkpoint(tmp_path / "tiny.pt", model=model, spec=ModelSpec("tinynets:build_tiny", 5, {"base": 4}))


def test_replay_refuses_a_changed_version_and_missing_code(nets, tmp_path):
    path = save_tiny(tmp_path)
    assert read_checkpoint(path)["model"]["source"]["module_version"] == "1.0"
    load_checkpoint(path)
    (nets / "tinynets.py").write_text(NETS.format(version="2.0"))
    sys.modules.pop("tinynets", None)
    with pytest.raises(CheckpointError, match=r"tinynets 1.0 \(now 2.0\).*install tinynets==1.0"):
        load_checkpoint(path)
    (nets / "tinynets.py").unlink()
    sys.modules.pop("tinynets", None)
    with pytest.raises(CheckpointError, match="cannot be imported.*made with tinynets==1.0"):
        load_checkpoint(path)


def test_registered_models_record_no_source():
    assert model_provenance("unet") == {}
    assert "source" not in read_checkpoint(save_checkpoint(
        Path("u.pt"), model=build_model("unet", 3, width=0.125), spec=ModelSpec("unet", 3, {"width": 0.125})))["model"]


def vss(*args: str, env: dict | None = None, expect: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "vss_cli", "--threads", "1", *args], capture_output=True, text=True,
                          timeout=600, env=env or os.environ.copy())
    assert proc.returncode == expect, (args, proc.stdout[-1500:], proc.stderr[-1500:])
    return proc


def runs(kind: str) -> list:
    from vss_cli.store import Store

    return Store(os.environ["VSS_DB"]).list_runs(kind=kind)


def test_import_path_model_through_train_prune_finetune_eval_bench_report(nets, tmp_path):
    small = ["--input-size", "32,48", "--batch-size", "4", "--max-iters-per-epoch", "2", "--device", "cpu"]
    vss("train", "--model", "tinynets:build_tiny", "--model-option", "base=8", "--epochs", "1", *small)
    (train_run,) = runs("train")
    train, config = train_run.id, train_run.config
    assert config["model_source"] == {"source": "import", "import_path": "tinynets:build_tiny", "module_version": "1.0"}
    vss("prune", "--ckpt", train, "--method", "taylor", "--global-ratio", "0.3", "--budget", "macs", "--samples", "4",
        "--input-size", "32,48", "--speed-check-iters", "0", "--device", "cpu")
    pruned = runs("prune")[0].id
    vss("finetune", "--model-from", pruned, "--epochs", "1", *small)
    tuned = runs("finetune")[0].id
    vss("eval", "--baseline", train, "--candidate", tuned, "--input-size", "32,48", "--speed-iters", "2",
        "--warmup", "1", "--device", "cpu")
    vss("bench", "--baseline", train, "--methods", "l1", "--ratios", "0.3", "--finetune-epochs", "1",
        "--max-iters-per-epoch", "2", "--input-size", "32,48", "--speed-iters", "2", "--warmup", "1",
        "--out-dir", str(tmp_path / "bench"), "--device", "cpu")
    rows = json.loads(vss("report", "latest", "--format", "json").stdout)
    assert rows and all(r["method"] == "l1" for r in rows)
    # the code changed underneath the checkpoints: one line, exit 2
    (nets / "tinynets.py").write_text(NETS.format(version="2.0"))
    proc = vss("eval", "--baseline", train, "--candidate", tuned, "--device", "cpu", expect=2)
    assert "tinynets 1.0 (now 2.0)" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_vss_import_takes_a_bare_smp_state_dict(tmp_path):
    """The network's own state_dict (as smp saves it, unused encoder stages included) imports strictly."""
    smp = pytest.importorskip("segmentation_models_pytorch")
    from typer.testing import CliRunner

    from vss_cli.cli.app import app
    from vss_cli.data import get_spec

    classes = get_spec("synthetic").num_classes
    torch.manual_seed(0)
    net = smp.create_model("pspnet", "resnet18", encoder_weights=None, classes=classes, psp_out_channels=32).eval()
    torch.save(net.state_dict(), tmp_path / "psp.pth")
    result = CliRunner().invoke(app, ["import", str(tmp_path / "psp.pth"), "--model", "smp:PSPNet:resnet18",
                                      "--model-option", "psp_out_channels=32", "--save", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    loaded = load_checkpoint(next((tmp_path / "out").rglob("imported.pt")))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model(x)["out"], net(x))


def test_an_entry_point_names_a_model_and_records_its_distribution(tmp_path, monkeypatch):
    """A package registering `[project.entry-points."vss.models"] tiny = "tinyep:build"`."""
    (tmp_path / "tinyep.py").write_text(NETS.format(version="ignored").replace("build_tiny", "build"))
    info = tmp_path / "tinyep-2.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyep\nVersion: 2.1\n")
    (info / "entry_points.txt").write_text("[vss.models]\ntiny = tinyep:build\n")
    (info / "top_level.txt").write_text("tinyep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        model = build_model("tiny", 3, base=4)
        assert model.eval()(torch.zeros(1, 3, 32, 32))["out"].shape == (1, 3, 32, 32)
        assert model.vss_source == {"source": "entry-point", "entry_point": "tiny", "import_path": "tinyep:build",
                                    "requires": {"tinyep": "2.1"}}
    finally:
        sys.modules.pop("tinyep", None)


def test_export_onnx_of_an_smp_model(tmp_path):
    pytest.importorskip("segmentation_models_pytorch")
    pytest.importorskip("onnxruntime")
    from typer.testing import CliRunner

    from vss_cli.cli.app import app
    from vss_cli.data import get_spec

    classes = get_spec("synthetic").num_classes
    options = {"decoder_channels": [16, 16, 8, 8, 8]}
    path = save_checkpoint(tmp_path / "smp.pt", model=build_model("smp:Unet:resnet18", classes, **options),
                           spec=ModelSpec("smp:Unet:resnet18", classes, options), dataset=get_spec("synthetic").to_dict())
    result = CliRunner().invoke(app, ["export", str(path), "--format", "onnx", "--input-size", "64,64",
                                      "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").is_file()
