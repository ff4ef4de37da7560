"""Model registry: a decorator on short builders, one `build_model(name, num_classes, **kw)` (timm-style)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

from vss_cli.errors import ConfigError

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: its builder, the classifier convs that keep `num_classes` outputs, and a
    tiny variant (`tiny_kwargs`) that tests build in milliseconds."""

    name: str
    builder: Builder
    output_layers: tuple[str, ...]
    tiny_kwargs: dict = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str, *, output_layers: tuple[str, ...], tiny_kwargs: dict | None = None, description: str = ""
) -> Callable[[Builder], Builder]:
    """Register `fn(num_classes, **kw) -> nn.Module` under `name`."""

    def decorate(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, fn, tuple(output_layers), dict(tiny_kwargs or {}), description)
        return fn

    return decorate


def list_models() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def get_model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}: pass one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model; bad names, options or values raise a one-line `ConfigError`.

    The model gets a `vss_model_name` attribute so later stages can look up its `ModelInfo`.
    """
    info = get_model_info(name)
    accepted = [p for p in inspect.signature(info.builder).parameters if p != "num_classes"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"model {name} has no option {', '.join(unknown)}: it accepts {', '.join(accepted)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes={num_classes!r} is not a positive integer: pass e.g. 19")
    width = kwargs.get("width", 1.0)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ConfigError(f"width={width!r} is not a positive channel multiplier: pass e.g. 0.5 or 1.0")
    model = info.builder(num_classes, **kwargs)
    model.vss_model_name = name
    return model


def output_layer_names(model_name: str, model: nn.Module) -> list[str]:
    """The registered output layers that exist in `model` (the aux head's only when it was built)."""
    present = {n for n, _ in model.named_modules()}
    return [n for n in get_model_info(model_name).output_layers if n in present]


def reject_backbone_weights(name: str, pretrained_backbone: bool, backbone_weights: str | None) -> None:
    """Models without an ImageNet backbone refuse backbone-weight options instead of ignoring them."""
    if pretrained_backbone or backbone_weights:
        raise ConfigError(
            f"model {name} has no ImageNet backbone: drop --pretrained-backbone/--backbone-weights "
            "or pick a ResNet model"
        )


def scaled(channels: int, width: float) -> int:
    """`channels` × `width`, rounded, at least 1 (width 1.0 gives the published count)."""
    return max(1, int(round(channels * width)))
