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
    build in milliseconds. `structure` is None for models of a `ModelSource` (smp, import path), whose
    builder attaches the structure it derives to each model it builds."""

    name: str
    builder: Builder
    structure: ModelStructure | None
    tiny_kwargs: dict = field(default_factory=dict)
    description: str = ""

    @property
    def output_layers(self) -> tuple[str, ...]:
        return self.structure.output_layers if self.structure is not None else ()


@dataclass(frozen=True)
class ModelSource:
    """A family of models named by a pattern instead of one registry entry each (`smp:Unet:resnet18`,
    `my_pkg.nets:build_bisenet`, an entry point of the `vss.models` group).

    `matches(name)` claims a name; `info(name)` gives its `ModelInfo` (a builder taking `num_classes`
    and keyword options); `provenance(name)` is what a checkpoint records to replay it in another
    process (package and version), raising `ConfigError` when the code cannot be imported.
    """

    name: str
    matches: Callable[[str], bool]
    info: Callable[[str], ModelInfo]
    provenance: Callable[[str], dict]
    scheme: str = ""  # how its names look, shown by `vss models`
    priority: int = 0  # sources are tried lowest first (a narrow prefix before a broad pattern)


_REGISTRY: dict[str, ModelInfo] = {}
_SOURCES: list[ModelSource] = []


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


def register_source(source: ModelSource) -> ModelSource:
    """Add a family of pattern-named models; registered names always win over a source's pattern."""
    _SOURCES.append(source)
    _SOURCES.sort(key=lambda s: s.priority)
    return source


def list_sources() -> list[ModelSource]:
    return list(_SOURCES)


def source_of(name: str) -> ModelSource | None:
    """The source that claims `name`, or None for a registered (or unknown) name."""
    if name in _REGISTRY:
        return None
    return next((s for s in _SOURCES if s.matches(name)), None)


def list_models() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def get_model_info(name: str) -> ModelInfo:
    if name in _REGISTRY:
        return _REGISTRY[name]
    source = source_of(name)
    if source is None:
        schemes = "".join(f", {s.scheme}" for s in _SOURCES if s.scheme)
        raise ConfigError(f"unknown model {name!r}: pass one of {', '.join(_REGISTRY)}{schemes}")
    return source.info(name)


def model_provenance(name: str) -> dict:
    """What a checkpoint of model `name` records to replay it elsewhere: {} for a registered model;
    for a source's model its source, import path, package and version."""
    source = source_of(name)
    return source.provenance(name) if source is not None else {}


def check_provenance(name: str, recorded: dict) -> None:
    """Refuse, in one line, to rebuild a source's model whose code is missing here or whose package
    (or module `__version__`) differs from the one the checkpoint was made with."""
    if not recorded:
        return
    wanted = dict(recorded.get("requires", {}))
    if "module_version" in recorded:
        wanted[name.split(":")[0]] = recorded["module_version"]
    pins = " ".join(f"{p}=={v}" for p, v in wanted.items())
    try:
        current = model_provenance(name)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; the checkpoint was made with {pins or 'that code'}") from None
    found = dict(current.get("requires", {}))
    if "module_version" in current:
        found[name.split(":")[0]] = current["module_version"]
    changed = [f"{p} {v} (now {found.get(p, 'not installed')})" for p, v in wanted.items() if found.get(p) != v]
    if changed:
        raise ConfigError(f"model {name} was built with {', '.join(changed)}: another version may build another "
                          f"architecture; install {pins} to load this checkpoint")


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model; bad names, options or values raise a one-line `ConfigError`.

    The model gets a `vss_model_name` attribute so later stages can look up its `ModelInfo`, and
    `vss_source` (`model_provenance`), which its checkpoints record.
    """
    info = get_model_info(name)
    params = inspect.signature(info.builder).parameters
    accepted = [p for p, v in params.items() if p != "num_classes" and v.kind is not v.VAR_KEYWORD]
    takes_any = any(v.kind is v.VAR_KEYWORD for v in params.values())
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and not takes_any:
        raise ConfigError(f"model {name} has no option {', '.join(unknown)}: it accepts {', '.join(accepted)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes={num_classes!r} is not a positive integer: pass e.g. 19")
    width = kwargs.get("width", 1.0)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ConfigError(f"width={width!r} is not a positive channel multiplier: pass e.g. 0.5 or 1.0")
    model = info.builder(num_classes, **kwargs)
    model.vss_model_name = name
    if info.structure is not None:
        model.vss_structure = info.structure
    model.vss_source = model_provenance(name)
    return model


def declared_structure(model: nn.Module) -> ModelStructure | None:
    """The structure `model` declares (set by `build_model`, or by a factory that attaches its own);
    None for a bare module that declares nothing."""
    structure = getattr(model, "vss_structure", None)
    if structure is None and getattr(model, "vss_model_name", None) in _REGISTRY:
        structure = _REGISTRY[model.vss_model_name].structure
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
