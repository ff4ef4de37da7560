"""Segmentation models behind one registry: `build_model(name, num_classes, **kw)`, `list_models()`.

Importing this package registers every family (torchvision DeepLabV3/FCN, ResNet + plain head,
SegNet, U-Net).
"""

# importing the families registers their models; this (sorted) order is the order of `list_models()`
from vss_cli.models import deeplab_fcn, resnet_seg, segnet, unet  # noqa: F401
from vss_cli.models.registry import (
    ModelInfo,
    ModelStructure,
    build_model,
    declared_structure,
    get_model_info,
    list_models,
    model_structure,
    output_layer_names,
    register_model,
)
from vss_cli.models.resnet import ScalableResNet, WeightsError

__all__ = [
    "ModelInfo",
    "ModelStructure",
    "ScalableResNet",
    "WeightsError",
    "build_model",
    "declared_structure",
    "get_model_info",
    "list_models",
    "model_structure",
    "output_layer_names",
    "register_model",
]
