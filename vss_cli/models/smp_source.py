"""segmentation_models_pytorch (optional extra `smp`) as a model source: `smp:ARCH:ENCODER`.

ARCH is one of smp's architectures (Unet, UnetPlusPlus, FPN, PSPNet, DeepLabV3, DeepLabV3Plus,
Linknet, MAnet, PAN, UPerNet, Segformer, DPT; any case), ENCODER one of smp's encoders (resnet50,
efficientnet-b0, mobilenet_v2, ...) or a timm one as `tu-NAME`. Keyword options go to
`smp.create_model` (encoder_depth, decoder_channels, ...). The encoder starts random
(`encoder_weights=None`) unless `pretrained_backbone=True` asks for smp's ImageNet weights.

Structure (derived from smp's attributes): backbone `encoder`, head `decoder` + `segmentation_head`,
output layer `segmentation_head.0`; GroupNorms with several channels per group (FPN's decoder) are
never pruned (see `adapter.groupnorm_layers`). Encoder stages an architecture does not use (PSPNet's
encoder runs at depth 3) are replaced by `nn.Identity` at build (`adapter.drop_idle_modules`): they
would otherwise run outside Torch-Pruning's graph or carry dead weights.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

import torch.nn as nn

from vss_cli.errors import ConfigError
from vss_cli.models.adapter import adapt, drop_idle_modules
from vss_cli.models.registry import ModelInfo, ModelSource, register_source
from vss_cli.models.resnet import WeightsError, read_state_dict

PREFIX = "smp:"
DISTRIBUTION = "segmentation-models-pytorch"
INSTALL = "pip install -e '.[smp]' (or pip install segmentation-models-pytorch)"
# options vss sets itself: the class count, the encoder (from the name), weights (--pretrained-backbone),
# logits out (a loss on logits), and the image-level classification head (vss's aux loss is per pixel)
RESERVED = {"classes": "num_classes comes from the dataset", "encoder_name": "the encoder is in the model name",
            "arch": "the architecture is in the model name",
            "encoder_weights": "pass --pretrained-backbone for the encoder's ImageNet weights",
            "activation": "vss trains on logits", "aux_params": "vss's aux loss is per pixel, smp's aux head "
            "classifies whole images"}


def _smp():
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise ConfigError(f"smp: models need segmentation_models_pytorch, which is not installed: {INSTALL}") from None
    return smp


def parse(name: str) -> tuple[str, str]:
    """`smp:DeepLabV3Plus:resnet50` -> (smp's architecture class name, encoder), validated."""
    parts = name[len(PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"model {name!r} is not smp:ARCH:ENCODER: pass e.g. smp:DeepLabV3Plus:resnet50")
    arch, encoder = parts
    smp = _smp()
    archs = {cls.__name__.lower(): cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}
    if arch.lower() not in archs:
        raise ConfigError(f"smp has no architecture {arch!r}: pass one of {', '.join(archs.values())}")
    if not encoder.startswith("tu-") and encoder not in smp.encoders.get_encoder_names():
        raise ConfigError(f"smp has no encoder {encoder!r}: pass one of its encoders (e.g. resnet18, resnet50, "
                          "mobilenet_v2, efficientnet-b0) or a timm one as tu-NAME")
    return archs[arch.lower()], encoder


def builder(name: str) -> Callable[..., nn.Module]:
    arch, encoder = parse(name)

    def build(num_classes: int, width: float = 1.0, aux_loss: bool = False, pretrained_backbone: bool = False,
              backbone_weights: str | None = None, **options) -> nn.Module:
        if width != 1.0:
            raise ConfigError(f"{name} has no --width: pick a smaller encoder (resnet18, mobilenet_v2) or "
                              "smaller decoder_channels")
        if aux_loss:
            raise ConfigError(f"{name} has no per-pixel aux head: drop --aux-loss")
        reserved = sorted(set(options) & set(RESERVED))
        if reserved:
            raise ConfigError(f"{name} sets {reserved[0]} itself: {RESERVED[reserved[0]]}")
        smp = _smp()
        try:
            net = smp.create_model(arch, encoder_name=encoder, classes=num_classes,
                                   encoder_weights="imagenet" if pretrained_backbone else None, **options)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"smp cannot build {name} with {options or 'default options'}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        except OSError as exc:  # weights download: no network, proxy, cache
            raise WeightsError(f"ImageNet weights of {encoder} could not be downloaded ({type(exc).__name__}): "
                               "pass --backbone-weights PATH to a saved encoder state_dict") from None
        if backbone_weights:
            load_encoder(net.encoder, backbone_weights, encoder)
        return adapt(net, num_classes, name, dropped=tuple(drop_idle_modules(net)))

    return build


def load_encoder(encoder: nn.Module, path: str, encoder_name: str) -> None:
    """An encoder state_dict file, loaded strictly."""
    try:
        encoder.load_state_dict(read_state_dict(path), strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"backbone weights {path} do not fit smp's {encoder_name} encoder "
                           f"({str(exc).splitlines()[0]}): pass a state_dict of that encoder") from None


def info(name: str) -> ModelInfo:
    arch, encoder = parse(name)
    return ModelInfo(name, builder(name), None, {}, f"segmentation_models_pytorch {arch} over {encoder}")


def provenance(name: str) -> dict:
    """smp's version (and timm's for a `tu-` encoder): another version may build another architecture."""
    _, encoder = parse(name)
    packages = [DISTRIBUTION, *(["timm"] if encoder.startswith("tu-") else [])]
    return {"source": "smp", "requires": {p: importlib.metadata.version(p) for p in packages}}


SOURCE = register_source(ModelSource(name="smp", matches=lambda n: n.startswith(PREFIX), info=info,
                                     provenance=provenance, scheme="smp:ARCH:ENCODER"))
