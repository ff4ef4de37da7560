"""Dilated ResNet + a plain head (3×3 conv-BN-ReLU, 1×1 classifier), upsampled to the input size."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.segmentation.fcn import FCNHead

from vss_cli.models.registry import ModelStructure, register_model, scaled
from vss_cli.models.resnet import dilated_resnet, feature_extractor, stage_channels

STRUCTURE = ModelStructure(backbone=("backbone",), head=("classifier",), aux=("aux_classifier",),
                           output_layers=("classifier.3", "aux_classifier.4"))
TINY = {"width": 0.125}


class ResNetSeg(nn.Module):
    """Backbone features -> `classifier` (and `aux_classifier` on layer3) -> bilinear to input size."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, aux_classifier: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        out = {"out": F.interpolate(self.classifier(features["out"]), size=size, mode="bilinear", align_corners=False)}
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features["aux"])
            out["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return out


def simple_head(in_channels: int, channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, num_classes, 1),
    )


def resnet_seg(depth: int, num_classes: int, width: float, aux_loss: bool,
               pretrained_backbone: bool, backbone_weights: str | None) -> ResNetSeg:
    backbone = dilated_resnet(depth, width, pretrained_backbone, backbone_weights)
    channels = stage_channels(width)
    head = simple_head(channels["layer4"], scaled(256, width), num_classes)
    aux = FCNHead(channels["layer3"], num_classes) if aux_loss else None
    return ResNetSeg(feature_extractor(backbone, aux_loss), head, aux)


@register_model("resnet50_seg", structure=STRUCTURE, tiny_kwargs=TINY,
                description="dilated ResNet-50 + plain conv head")
def resnet50_seg(num_classes: int, width: float = 1.0, aux_loss: bool = False,
                 pretrained_backbone: bool = False, backbone_weights: str | None = None) -> ResNetSeg:
    return resnet_seg(50, num_classes, width, aux_loss, pretrained_backbone, backbone_weights)


@register_model("resnet101_seg", structure=STRUCTURE, tiny_kwargs=TINY,
                description="dilated ResNet-101 + plain conv head")
def resnet101_seg(num_classes: int, width: float = 1.0, aux_loss: bool = False,
                  pretrained_backbone: bool = False, backbone_weights: str | None = None) -> ResNetSeg:
    return resnet_seg(101, num_classes, width, aux_loss, pretrained_backbone, backbone_weights)
