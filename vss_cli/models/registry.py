"""Model registry: a decorator on short builders, one `build_model(name, num_classes, **kw)` (timm-style)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

from vss_cli.errors import ConfigError

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelStructure:
    """What a model declares about itself, so pruning never guesses from module names.

    Each region is a tuple of module-name prefixes (a module belongs to the first region with a
    prefix equal to its name or to a dotted ancestor of it): `backbone` (the feature extractor),
    `head` (decoder / segmentation head), `aux` (modules that only feed an auxiliary loss).
    `output_layers` are the final classifier convs that keep `num_classes` outputs (absent ones,
    such as an aux head that was not built, are skipped); `never_prune` are further modules whose
    output channels must stay (e.g. a conv whose width an external consumer fixes).
    """

    backbone: tuple[str, ...]
    head: tuple[str, ...]
    output_layers: tuple[str, ...]
    aux: tuple[str, ...] = ()
    never_prune: tuple[str, ...] = ()

    def region_of(self, module_name: str) -> str:
        """`backbone`, `aux` or `head` for a dotted module name; a name no region declares is `head`
        only when the model declares no head either (never guessed from the name itself)."""
        for region in ("aux", "backbone", "head"):
            if any(_within(module_name, prefix) for prefix in getattr(self, region)):
                return region
        raise ValueError(f"module {module_name!r} is in no declared region (backbone {self.backbone}, "
                         f"head {self.head}, aux {self.aux})")

    def regions(self) -> dict[str, tuple[str, ...]]:
        return {"backbone": self.backbone, "head": self.head, "aux": self.aux}


def _within(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: its builder, its declared structure (regions, the classifier convs that
    keep `num_classes` outputs, layers never pruned), and a tiny variant (`tiny_kwargs`) that tests
    build in milliseconds."""

    name: str
    builder: Builder
    structure: ModelStructure
    tiny_kwargs: dict = field(default_factory=dict)
    description: str = ""

    @property
    def output_layers(self) -> tuple[str, ...]:
        return self.structure.output_layers


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str, *, structure: ModelStructure, tiny_kwargs: dict | None = None, description: str = ""
) -> Callable[[Builder], Builder]:
    """Register `fn(num_classes, **kw) -> nn.Module` under `name`, with its declared structure."""

    def decorate(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, fn, structure, dict(tiny_kwargs or {}), description)
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
    model.vss_structure = info.structure
    return model


def declared_structure(model: nn.Module) -> ModelStructure | None:
    """The structure `model` declares (set by `build_model`, or by a factory that attaches its own);
    None for a bare module that declares nothing."""
    structure = getattr(model, "vss_structure", None)
    if structure is None and getattr(model, "vss_model_name", None) is not None:
        structure = get_model_info(model.vss_model_name).structure
    return structure


def model_structure(model: nn.Module) -> ModelStructure:
    """`declared_structure`, or a one-line error for a module that declares none."""
    structure = declared_structure(model)
    if structure is None:
        raise ConfigError("model declares no structure (regions, output layers): build it with "
                          "vss_cli.models.build_model or attach a ModelStructure as `vss_structure`")
    return structure


def output_layer_names(model_name: str, model: nn.Module) -> list[str]:
    """The registered output layers that exist in `model` (the aux head's only when it was built)."""
    present = {n for n, _ in model.named_modules()}
    structure = getattr(model, "vss_structure", None) or get_model_info(model_name).structure
    return [n for n in structure.output_layers if n in present]


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
