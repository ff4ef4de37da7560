"""Segmentation models behind one registry: `build_model(name, num_classes, **kw)`, `list_models()`.

Importing this package registers every family (torchvision DeepLabV3/FCN, ResNet + plain head,
SegNet, U-Net).
"""

# importing the families registers their models; this (sorted) order is the order of `list_models()`
from vss_cli.models import deeplab_fcn, resnet_seg, segnet, unet  # noqa: F401
from vss_cli.models.registry import (
    ModelInfo,
    build_model,
    get_model_info,
    list_models,
    output_layer_names,
    register_model,
)
from vss_cli.models.resnet import ScalableResNet, WeightsError

__all__ = [
    "ModelInfo",
    "ScalableResNet",
    "WeightsError",
    "build_model",
    "get_model_info",
    "list_models",
    "output_layer_names",
    "register_model",
]
