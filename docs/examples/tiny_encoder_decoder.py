"""A small custom encoder-decoder, the worked example of docs/your-model.md.

Use it as `--model tiny_encoder_decoder:build` with this folder on PYTHONPATH. The factory takes
`num_classes` and keyword options (here `base`, the stem width) and returns the network together
with its `ModelStructure`: which modules are the backbone and the head, and which conv is the
classifier that keeps `num_classes` outputs. (Without it vss would derive the same structure from
the `encoder` / `decoder` / `segmentation_head` attributes, smp's layout.)
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

__version__ = "1.0"  # recorded in every checkpoint: replay refuses another version


def conv_bn_relu(i: int, o: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(o),
                         nn.ReLU(inplace=True))


class Down(nn.Module):
    """A depthwise-separable residual stage: stride-2 conv, then depthwise + pointwise with a skip."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(i, o, stride=2)
        self.depthwise = conv_bn_relu(o, o, groups=o)
        self.pointwise = nn.Sequential(nn.Conv2d(o, o, 1, bias=False), nn.BatchNorm2d(o))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return F.relu(x + self.pointwise(self.depthwise(x)))


class TinyEncoderDecoder(nn.Module):
    def __init__(self, num_classes: int, base: int = 16) -> None:
        super().__init__()
        self.encoder = nn.ModuleList([conv_bn_relu(3, base, stride=2), Down(base, 2 * base), Down(2 * base, 4 * base)])
        self.decoder = nn.ModuleDict({"lateral": conv_bn_relu(2 * base, 2 * base),
                                      "fuse": conv_bn_relu(6 * base, 2 * base)})
        self.segmentation_head = nn.Conv2d(2 * base, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        stem = self.encoder[0](x)
        mid = self.encoder[1](stem)
        deep = self.encoder[2](mid)
        up = F.interpolate(deep, size=mid.shape[-2:], mode="bilinear", align_corners=False)
        y = self.decoder["fuse"](torch.cat([self.decoder["lateral"](mid), up], dim=1))  # a skip concatenation
        return F.interpolate(self.segmentation_head(y), size=size, mode="bilinear", align_corners=False)


def build(num_classes: int, base: int = 16):
    from vss_cli.models import ModelStructure

    structure = ModelStructure(backbone=("encoder",), head=("decoder", "segmentation_head"),
                               output_layers=("segmentation_head",))
    return TinyEncoderDecoder(num_classes, base), structure
