"""U-Net (Ronneberger et al., MICCAI 2015): 4 down / 4 up stages with concatenated skips, padded convs + BN."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.segmentation.fcn import FCNHead

from vss_cli.models.registry import ModelStructure, register_model, reject_backbone_weights, scaled

STAGE_CHANNELS = (64, 128, 256, 512, 1024)
STRUCTURE = ModelStructure(backbone=("encoder",), head=("decoder", "classifier"), aux=("aux_classifier",),
                           output_layers=("classifier", "aux_classifier.4"))


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class Up(nn.Module):
    """2×2 up-convolution, concatenation with the skip, double conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:  # odd sizes: pooling floored, so pad back to the skip's size
            x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    def __init__(self, num_classes: int, width: float = 1.0, aux_loss: bool = False) -> None:
        super().__init__()
        c = [scaled(ch, width) for ch in STAGE_CHANNELS]
        self.encoder = nn.ModuleList([DoubleConv(3, c[0]), *(Down(c[i], c[i + 1]) for i in range(4))])
        self.decoder = nn.ModuleList(Up(c[i + 1], c[i]) for i in reversed(range(4)))
        self.classifier = nn.Conv2d(c[0], num_classes, 1)
        self.aux_classifier = FCNHead(c[4], num_classes) if aux_loss else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        bottleneck = skips.pop()
        x = bottleneck
        for stage in self.decoder:
            x = stage(x, skips.pop())
        out = {"out": self.classifier(x)}
        if self.aux_classifier is not None:
            aux = self.aux_classifier(bottleneck)
            out["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return out


@register_model("unet", structure=STRUCTURE, tiny_kwargs={"width": 0.125},
                description="U-Net, 4 down / 4 up with skip concatenation")
def unet(num_classes: int, width: float = 1.0, aux_loss: bool = False,
         pretrained_backbone: bool = False, backbone_weights: str | None = None) -> UNet:
    reject_backbone_weights("unet", pretrained_backbone, backbone_weights)
    return UNet(num_classes, width, aux_loss)
