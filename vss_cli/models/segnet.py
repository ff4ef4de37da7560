"""SegNet (Badrinarayanan et al., TPAMI 2017): an encoder whose max-pool indices drive the decoder's unpooling.

Simplified to two conv-BN-ReLU per stage; made safe for physical channel pruning (see `DecoderStage`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.segmentation.fcn import FCNHead

from vss_cli.models.registry import ModelStructure, register_model, reject_backbone_weights, scaled

STAGE_CHANNELS = (64, 128, 256, 512, 512)
STRUCTURE = ModelStructure(backbone=("encoder",), head=("decoder", "classifier"), aux=("aux_classifier",),
                           output_layers=("classifier", "aux_classifier.4"))


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class EncoderStage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*conv_bn_relu(in_channels, out_channels), *conv_bn_relu(out_channels, out_channels))
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (features before pooling, pooled, pool indices)."""
        features = self.convs(x)
        pooled, indices = self.pool(features)
        return features, pooled, indices


class DecoderStage(nn.Module):
    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        self.convs = nn.Sequential(*conv_bn_relu(channels, channels), *conv_bn_relu(channels, out_channels))

    def forward(self, x: torch.Tensor, pooled: torch.Tensor, indices: torch.Tensor, size: torch.Size) -> torch.Tensor:
        # Channel k of `x` is unpooled with the indices of encoder channel k, but indices are integer
        # tensors that autograd (and so Torch-Pruning's dependency graph) cannot see. Adding the
        # encoder's pooled output times zero makes the coupling an elementwise add in the graph, so
        # pruning an encoder channel prunes the matching decoder channel and the indices stay aligned.
        x = x + pooled.mul(0)
        return self.convs(self.unpool(x, indices, output_size=size))


class SegNet(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0, aux_loss: bool = False) -> None:
        super().__init__()
        channels = [scaled(c, width) for c in STAGE_CHANNELS]
        ins = [3, *channels[:-1]]
        self.encoder = nn.ModuleList(EncoderStage(i, o) for i, o in zip(ins, channels, strict=True))
        outs = [channels[0], *channels[:-1]]
        self.decoder = nn.ModuleList(DecoderStage(c, o) for c, o in zip(channels, outs, strict=True))
        self.classifier = nn.Conv2d(channels[0], num_classes, 1)
        self.aux_classifier = FCNHead(channels[-1], num_classes) if aux_loss else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        skips = []
        for stage in self.encoder:
            features, x, indices = stage(x)
            skips.append((x, indices, features.shape[-2:]))
        deepest = features
        for stage, (pooled, indices, stage_size) in zip(reversed(self.decoder), reversed(skips), strict=True):
            x = stage(x, pooled, indices, stage_size)
        out = {"out": self.classifier(x)}
        if self.aux_classifier is not None:
            aux = self.aux_classifier(deepest)
            out["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return out


@register_model("simple_segnet", structure=STRUCTURE, tiny_kwargs={"width": 0.125},
                description="SegNet encoder-decoder, pooling-index unpooling")
def simple_segnet(num_classes: int, width: float = 1.0, aux_loss: bool = False,
                  pretrained_backbone: bool = False, backbone_weights: str | None = None) -> SegNet:
    reject_backbone_weights("simple_segnet", pretrained_backbone, backbone_weights)
    return SegNet(num_classes, width, aux_loss)
