"""Segmentation models behind one registry: `build_model(name, num_classes, **kw)`, `list_models()`.

Importing this package registers every family (torchvision DeepLabV3/FCN and mobile segmenters,
ResNet + plain head, SegNet, U-Net) and the sources beyond them (segmentation_models_pytorch, import
paths, `vss.models` entry points).
"""

# importing the families registers their models; this (sorted) order is the order of `list_models()`;
# `imported` and `smp_source` register the sources of pattern-named models (smp:ARCH:ENCODER,
# package.module:factory, entry points), tried in the order of their `priority`
from vss_cli.models import deeplab_fcn, imported, mobile, resnet_seg, segnet, smp_source, unet  # noqa: F401
from vss_cli.models.registry import (
    ModelInfo,
    ModelSource,
    ModelStructure,
    build_model,
    check_provenance,
    declared_structure,
    get_model_info,
    list_models,
    list_sources,
    model_provenance,
    model_structure,
    output_layer_names,
    register_model,
)
from vss_cli.models.resnet import ScalableResNet, WeightsError

__all__ = [
    "ModelInfo",
    "ModelSource",
    "ModelStructure",
    "ScalableResNet",
    "WeightsError",
    "build_model",
    "check_provenance",
    "declared_structure",
    "get_model_info",
    "list_models",
    "list_sources",
    "model_provenance",
    "model_structure",
    "output_layer_names",
    "register_model",
]
