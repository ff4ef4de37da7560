"""`vss models check MODEL`: exit 0 with the tables on every registered model, exit 2 with one line
naming the module when Torch-Pruning cannot follow an op."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.models import get_model_info, list_models
from vss_cli.workflows.model_check import check_model

torch.set_num_threads(1)

SIZE = (32, 64)
# fixed split sizes in the forward pass: Torch-Pruning prunes the conv, the code still splits 8 + 8
SPLITNET = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import torch.nn.functional as F


    class SplitNet(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.mix = nn.Conv2d(8, 8, 3, 1, 1)
            self.classifier = nn.Conv2d(16, num_classes, 1)

        def forward(self, x):
            a, b = torch.split(self.backbone(x), [8, 8], dim=1)
            y = self.classifier(torch.cat([self.mix(a), b], dim=1))
            return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


    def build(num_classes):
        return SplitNet(num_classes)
''')


def invoke(*args: str):
    return CliRunner().invoke(app, ["models", "check", *args], catch_exceptions=False)


def options(name: str) -> list[str]:
    return [a for k, v in get_model_info(name).tiny_kwargs.items() for a in ("--model-option", f"{k}={json.dumps(v)}")]


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_passes(name):
    result = invoke(name, "--input-size", f"{SIZE[0]},{SIZE[1]}", "--num-classes", "5", *options(name))
    assert result.exit_code == 0, result.output
    assert "prunable groups" in result.output and "dry-run prune" in result.output


def test_the_report_counts_groups_and_names_unpruned_layers():
    check = check_model("deeplabv3_resnet50", 5, SIZE, options={"width": 0.125, "aux_loss": True})
    regions = {r.region: r for r in check.groups}
    assert set(regions) == {"backbone", "head"}  # the aux head's groups feed no inference output
    assert 0 < sum(r.macs_share for r in check.groups) < 1
    reasons = {r.layer: r.reason for r in check.unpruned}
    assert reasons["classifier.4"].startswith("output layer")
    assert reasons["aux_classifier.4"].startswith("output layer")
    assert [(r.method, r.allocation) for r in check.dry_runs] == [("l1", "uniform"), ("l1", "paper"),
                                                                  ("taylor", "uniform"), ("taylor", "paper")]
    assert all(r.shape_kept and r.replay_identical and r.within_tolerance for r in check.dry_runs)


def test_smp_fpn_reports_its_groupnorm_layers():
    pytest.importorskip("segmentation_models_pytorch")
    result = invoke("smp:FPN:resnet18", "--input-size", "64,64", "--num-classes", "3", "--model-option",
                    "decoder_pyramid_channels=32", "--model-option", "decoder_segmentation_channels=32")
    assert result.exit_code == 0, result.output
    assert "GroupNorm" in result.output


def test_an_op_torch_pruning_cannot_follow_exits_2_naming_the_module(tmp_path, monkeypatch):
    (tmp_path / "splitnet.py").write_text(SPLITNET)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(app, ["models", "check", "splitnet:build", "--input-size", "32,32"])
    assert result.exit_code == 2
    line = result.output.strip()
    assert len(line.splitlines()) == 1, line
    assert "splitnet:build" in line and "net (SplitNet)" in line and "split" in line


def test_a_bad_model_name_or_ratio_exits_2():
    assert invoke("no_such_model").exit_code == 2
    assert invoke("unet", "--ratio", "1.5").exit_code == 2
