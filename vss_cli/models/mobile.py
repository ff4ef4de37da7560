"""torchvision's mobile segmenters: LR-ASPP and DeepLabV3 over a dilated MobileNetV3-Large.

Depthwise convolutions, squeeze-excitation and hard-swish: the coupled channels (a depthwise conv's
input and output, an SE gate and the features it scales) that Torch-Pruning's graph keeps together.
At width 1.0 the architecture and module names are torchvision's `lraspp_mobilenet_v3_large` /
`deeplabv3_mobilenet_v3_large` (weights=None); `width` scales the backbone (MobileNetV3's
`width_mult`) and the head, so tests build a tiny variant in milliseconds.
"""

from __future__ import annotations

from torchvision.models import MobileNet_V3_Large_Weights
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf
from torchvision.models.segmentation import LRASPP, DeepLabV3
from torchvision.models.segmentation.deeplabv3 import _deeplabv3_mobilenetv3
from torchvision.models.segmentation.lraspp import _lraspp_mobilenetv3

from vss_cli.errors import ConfigError
from vss_cli.models.deeplab_fcn import DeepLabHead
from vss_cli.models.registry import ModelStructure, register_model, scaled
from vss_cli.models.resnet import WeightsError, read_state_dict

TINY = {"width": 0.25}
LRASPP_STRUCTURE = ModelStructure(backbone=("backbone",), head=("classifier",),
                                  output_layers=("classifier.low_classifier", "classifier.high_classifier"))
DEEPLAB_STRUCTURE = ModelStructure(backbone=("backbone",), head=("classifier",), aux=("aux_classifier",),
                                   output_layers=("classifier.4", "aux_classifier.4"))


def mobilenet_v3_large(width: float, pretrained_backbone: bool, backbone_weights: str | None) -> MobileNetV3:
    """MobileNetV3-Large with its last stage dilated (output stride 16), as the segmenters use it."""
    if pretrained_backbone and backbone_weights:
        raise ConfigError("pass either --pretrained-backbone or --backbone-weights, not both")
    if pretrained_backbone and width != 1.0:
        raise ConfigError(f"ImageNet weights exist only for width 1.0, not {width}: drop --pretrained-backbone")
    setting, last_channel = _mobilenet_v3_conf("mobilenet_v3_large", width_mult=width, dilated=True)
    model = MobileNetV3(setting, last_channel)
    state = None
    if pretrained_backbone:
        try:
            state = MobileNet_V3_Large_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # no network, proxy, bad cache: all mean "bring the file yourself"
            raise WeightsError(f"ImageNet weights for mobilenet_v3_large could not be downloaded "
                               f"({type(exc).__name__}): pass --backbone-weights PATH") from None
    elif backbone_weights:
        state = read_state_dict(backbone_weights)
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError:
            raise WeightsError(f"backbone weights {backbone_weights or 'ImageNet'} do not fit mobilenet_v3_large "
                               f"at width {width}: pass a torchvision mobilenet_v3_large state_dict") from None
    return model


@register_model("lraspp_mobilenet_v3_large", structure=LRASPP_STRUCTURE, tiny_kwargs=TINY,
                description="LR-ASPP + dilated MobileNetV3-Large (torchvision)")
def lraspp_mobilenet_v3_large(num_classes: int, width: float = 1.0, aux_loss: bool = False,
                              pretrained_backbone: bool = False, backbone_weights: str | None = None) -> LRASPP:
    if aux_loss:
        raise ConfigError("lraspp_mobilenet_v3_large has no auxiliary head: drop --aux-loss")
    model = _lraspp_mobilenetv3(mobilenet_v3_large(width, pretrained_backbone, backbone_weights), num_classes)
    if width != 1.0:  # the head's 128 inner channels scale with the backbone
        low, high = model.classifier.low_classifier.in_channels, model.classifier.cbr[0].in_channels
        model = LRASPP(model.backbone, low, high, num_classes, inter_channels=scaled(128, width))
    return model


@register_model("deeplabv3_mobilenet_v3_large", structure=DEEPLAB_STRUCTURE, tiny_kwargs=TINY,
                description="DeepLabV3 + dilated MobileNetV3-Large (torchvision)")
def deeplabv3_mobilenet_v3_large(num_classes: int, width: float = 1.0, aux_loss: bool = False,
                                 pretrained_backbone: bool = False,
                                 backbone_weights: str | None = None) -> DeepLabV3:
    model = _deeplabv3_mobilenetv3(mobilenet_v3_large(width, pretrained_backbone, backbone_weights), num_classes,
                                   aux_loss)
    if width != 1.0:  # ASPP's 256 channels scale with the backbone (torchvision's head fixes them)
        in_channels = model.classifier[0].convs[0][0].in_channels
        model.classifier = DeepLabHead(in_channels, num_classes, scaled(256, width))
    return model
