"""torchvision's DeepLabV3 and FCN (same classes and module names) on the width-scalable dilated ResNet."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
from torchvision.models.segmentation import FCN, DeepLabV3
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.models.segmentation.fcn import FCNHead

from vss_cli.models.registry import ModelStructure, register_model, scaled
from vss_cli.models.resnet import dilated_resnet, feature_extractor, stage_channels

STRUCTURE = ModelStructure(backbone=("backbone",), head=("classifier",), aux=("aux_classifier",),
                           output_layers=("classifier.4", "aux_classifier.4"))
TINY = {"width": 0.125}


class DeepLabHead(nn.Sequential):
    """torchvision's DeepLabHead with `channels` (256·width) instead of a fixed 256."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256,
                 atrous_rates: Sequence[int] = (12, 24, 36)) -> None:
        super().__init__(
            ASPP(in_channels, atrous_rates, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, num_classes, 1),
        )


def _aux_head(width: float, num_classes: int, aux_loss: bool) -> FCNHead | None:
    return FCNHead(stage_channels(width)["layer3"], num_classes) if aux_loss else None


def deeplabv3(depth: int, num_classes: int, width: float, aux_loss: bool,
              pretrained_backbone: bool, backbone_weights: str | None) -> DeepLabV3:
    backbone = dilated_resnet(depth, width, pretrained_backbone, backbone_weights)
    head = DeepLabHead(stage_channels(width)["layer4"], num_classes, scaled(256, width))
    return DeepLabV3(feature_extractor(backbone, aux_loss), head, _aux_head(width, num_classes, aux_loss))


def fcn(depth: int, num_classes: int, width: float, aux_loss: bool,
        pretrained_backbone: bool, backbone_weights: str | None) -> FCN:
    backbone = dilated_resnet(depth, width, pretrained_backbone, backbone_weights)
    head = FCNHead(stage_channels(width)["layer4"], num_classes)
    return FCN(feature_extractor(backbone, aux_loss), head, _aux_head(width, num_classes, aux_loss))


@register_model("deeplabv3_resnet50", structure=STRUCTURE, tiny_kwargs=TINY,
                description="DeepLabV3 + dilated ResNet-50 (torchvision)")
def deeplabv3_resnet50(num_classes: int, width: float = 1.0, aux_loss: bool = False,
                       pretrained_backbone: bool = False, backbone_weights: str | None = None) -> DeepLabV3:
    return deeplabv3(50, num_classes, width, aux_loss, pretrained_backbone, backbone_weights)


@register_model("deeplabv3_resnet101", structure=STRUCTURE, tiny_kwargs=TINY,
                description="DeepLabV3 + dilated ResNet-101 (torchvision)")
def deeplabv3_resnet101(num_classes: int, width: float = 1.0, aux_loss: bool = False,
                        pretrained_backbone: bool = False, backbone_weights: str | None = None) -> DeepLabV3:
    return deeplabv3(101, num_classes, width, aux_loss, pretrained_backbone, backbone_weights)


@register_model("fcn_resnet50", structure=STRUCTURE, tiny_kwargs=TINY,
                description="FCN + dilated ResNet-50 (torchvision)")
def fcn_resnet50(num_classes: int, width: float = 1.0, aux_loss: bool = False,
                 pretrained_backbone: bool = False, backbone_weights: str | None = None) -> FCN:
    return fcn(50, num_classes, width, aux_loss, pretrained_backbone, backbone_weights)


@register_model("fcn_resnet101", structure=STRUCTURE, tiny_kwargs=TINY,
                description="FCN + dilated ResNet-101 (torchvision)")
def fcn_resnet101(num_classes: int, width: float = 1.0, aux_loss: bool = False,
                  pretrained_backbone: bool = False, backbone_weights: str | None = None) -> FCN:
    return fcn(101, num_classes, width, aux_loss, pretrained_backbone, backbone_weights)
