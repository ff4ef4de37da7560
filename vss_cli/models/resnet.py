"""A width-scalable dilated ResNet backbone whose width-1.0 form is torchvision's resnet50/101 exactly."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import Bottleneck, ResNet

from vss_cli.errors import ConfigError, VssError
from vss_cli.models.registry import scaled

DEPTHS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}
IMAGENET_WEIGHTS = {50: ResNet50_Weights.IMAGENET1K_V1, 101: ResNet101_Weights.IMAGENET1K_V1}


class WeightsError(VssError):
    """Backbone weights could not be downloaded, read or matched to the backbone."""


class ScalableResNet(ResNet):
    """torchvision's ResNet with every channel count multiplied by `width` (stem 64·width, ...).

    Module names are torchvision's, so at width 1.0 its ImageNet state_dict loads with strict=True.
    """

    def __init__(self, layers: list[int], width: float = 1.0, num_classes: int = 1000,
                 replace_stride_with_dilation: list[bool] | None = None) -> None:
        nn.Module.__init__(self)
        self.width = width
        self._norm_layer = nn.BatchNorm2d
        self.groups, self.base_width, self.dilation = 1, 64, 1
        self.inplanes = scaled(64, width)
        dilate = replace_stride_with_dilation or [False, False, False]
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(Bottleneck, 64, layers[0])
        self.layer2 = self._make_layer(Bottleneck, 128, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(Bottleneck, 256, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(Bottleneck, 512, layers[3], stride=2, dilate=dilate[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)
        self._init_weights()

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False) -> nn.Sequential:
        return super()._make_layer(block, scaled(planes, self.width), blocks, stride, dilate)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def stage_channels(width: float) -> dict[str, int]:
    """Output channels of layer3 and layer4 of a (Bottleneck) ScalableResNet at `width`."""
    return {"layer3": scaled(256, width) * 4, "layer4": scaled(512, width) * 4}


def dilated_resnet(depth: int, width: float = 1.0, pretrained_backbone: bool = False,
                   backbone_weights: str | None = None) -> ScalableResNet:
    """ResNet-`depth` at output stride 8 (layer3/4 dilated), as torchvision's segmentation models use."""
    if pretrained_backbone and backbone_weights:
        raise ConfigError("pass either --pretrained-backbone or --backbone-weights, not both")
    if pretrained_backbone and width != 1.0:
        raise ConfigError(f"ImageNet weights exist only for width 1.0, not {width}: drop --pretrained-backbone")
    state = None
    if pretrained_backbone:
        state = imagenet_state_dict(depth)
    elif backbone_weights:
        state = read_state_dict(backbone_weights)
    model = ScalableResNet(DEPTHS[depth], width, replace_stride_with_dilation=[False, True, True])
    if state is not None:
        load_backbone_state(model, state, backbone_weights or f"ImageNet resnet{depth}")
    return model


def imagenet_state_dict(depth: int) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights (from the torch hub cache, else downloaded)."""
    weights = IMAGENET_WEIGHTS[depth]
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # no network, proxy, bad cache: all mean "bring the file yourself"
        raise WeightsError(
            f"ImageNet weights for resnet{depth} could not be downloaded ({type(exc).__name__}): "
            f"pass --backbone-weights PATH to a saved resnet{depth} state_dict ({weights.url})"
        ) from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"backbone weights {path} do not exist: pass the path of a saved ResNet state_dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable, or not a torch.save file
        raise WeightsError(
            f"backbone weights {path} cannot be read by torch.load ({type(exc).__name__}): pass a ResNet state_dict file"
        ) from None
    if not isinstance(state, dict):
        raise WeightsError(f"backbone weights {path} are not a state_dict: pass a torchvision ResNet state_dict file")
    return state


def load_backbone_state(model: ScalableResNet, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every backbone tensor strictly; the classifier (`fc.*`) is never used and is skipped."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        detail = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise WeightsError(f"backbone weights {source} do not fit this backbone ({detail}): check --width and depth") from None
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        first = (missing or result.unexpected_keys)[0]
        raise WeightsError(
            f"backbone weights {source} do not match the ResNet backbone ({len(missing)} missing, "
            f"{len(result.unexpected_keys)} unexpected keys, e.g. {first}): pass a torchvision ResNet state_dict"
        )


def feature_extractor(backbone: ScalableResNet, aux_loss: bool) -> IntermediateLayerGetter:
    """`layer4` as "out" (and `layer3` as "aux"), dropping avgpool and fc."""
    layers = {"layer4": "out", "layer3": "aux"} if aux_loss else {"layer4": "out"}
    return IntermediateLayerGetter(backbone, return_layers=layers)
