"""Dataset specs: classes, ignore index, palette, default sizes and training defaults, in a registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vss_cli.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
SPLITS = ("train", "val", "test")

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class DatasetSpec:
    """What a model and the engine need to know about a dataset; stored in every checkpoint."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[RGB, ...]
    default_input_size: tuple[int, int]
    needs_root: bool
    default_model: str
    default_epochs: int
    default_batch_size: int
    default_lr: float
    split_sizes: Mapping[str, int] = field(default_factory=dict, hash=False)
    default_model_kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    train_scale: tuple[float, float] = (0.5, 2.0)  # random-scale range of the training pipeline
    ignore_index: int = IGNORE_INDEX
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layout: Mapping[str, Any] = field(default_factory=dict, hash=False)  # a per-tree format's settings (folder)

    def __post_init__(self) -> None:
        if len(self.palette) != len(self.class_names):
            raise ValueError(f"{self.name}: {len(self.class_names)} classes but {len(self.palette)} palette colours")
        # private copies so a caller mutating its dict cannot change a registered spec
        object.__setattr__(self, "split_sizes", dict(self.split_sizes))
        object.__setattr__(self, "default_model_kwargs", dict(self.default_model_kwargs))
        object.__setattr__(self, "layout", dict(self.layout))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists); `DatasetSpec.from_dict` reverses it."""
        out = {f.name: _json_safe(getattr(self, f.name)) for f in fields(self)}
        out["num_classes"] = self.num_classes
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSpec:
        """Rebuild a spec from `to_dict()` output (e.g. read back from a checkpoint)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("class_names", "default_input_size", "train_scale", "mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if "palette" in kwargs:
            kwargs["palette"] = tuple(tuple(c) for c in kwargs["palette"])
        return cls(**kwargs)


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_json_safe(v) for v in value]
    return value


_SPECS: dict[str, DatasetSpec] = {}
# formats whose classes live with each tree (folder): name -> (template spec, factory(template, root, **layout))
SpecFactory = Callable[..., DatasetSpec]
_FACTORIES: dict[str, SpecFactory] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a spec to the registry (re-registering a name replaces it)."""
    _SPECS[spec.name] = spec
    return spec


def register_spec_factory(template: DatasetSpec, factory: SpecFactory) -> DatasetSpec:
    """A format whose spec depends on its tree: `get_spec(name, root, **layout)` calls
    `factory(template, root, **layout)`; the template carries the defaults (model, epochs, size)."""
    register_dataset(template)
    _FACTORIES[template.name] = factory
    return template


def get_spec(name: str | DatasetSpec, data_root: str | Path | None = None, **layout: Any) -> DatasetSpec:
    """The spec called `name` (a spec passes through); an unknown name is a ConfigError listing the
    known ones. A per-tree format (folder) reads its classes from `data_root` with `layout` settings."""
    if isinstance(name, DatasetSpec):
        return name
    try:
        spec = _SPECS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset '{name}': choose one of {', '.join(list_datasets())}") from None
    if name in _FACTORIES:
        return _FACTORIES[name](spec, data_root, **{k: v for k, v in layout.items() if v is not None})
    return spec


def dataset_defaults(name: str) -> DatasetSpec:
    """The format's own defaults (model, epochs, batch, lr, size, whether it needs a root), also for a
    per-tree format whose classes are known only with its root."""
    return get_spec(name) if name not in _FACTORIES else _SPECS[name]


def recorded_spec(name: str, data_root: str | Path | None, recorded: Mapping[str, Any] | None) -> DatasetSpec:
    """The spec of dataset `name` for a checkpoint whose dataset record is `recorded`: a per-tree
    format reuses the recorded layout (classes, suffixes) when the record is of the same dataset."""
    recorded = recorded or {}
    layout = recorded.get("layout") or {} if recorded.get("name") == name else {}
    return get_spec(name, data_root, **layout)


def list_datasets() -> list[str]:
    return sorted(_SPECS)


CITYSCAPES = register_dataset(
    DatasetSpec(
        name="cityscapes",
        class_names=(
            "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
            "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
            "motorcycle", "bicycle",
        ),
        palette=(
            (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
            (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
            (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
            (0, 80, 100), (0, 0, 230), (119, 11, 32),
        ),
        default_input_size=(512, 1024),
        needs_root=True,
        split_sizes={"train": 2975, "val": 500, "test": 1525},
        default_model="deeplabv3_resnet50",
        default_epochs=100,
        default_batch_size=8,
        default_lr=0.01,
    )
)

CAMVID = register_dataset(
    DatasetSpec(
        name="camvid",
        class_names=(
            "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
            "Pedestrian", "Bicyclist",
        ),
        palette=(
            (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
            (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
        ),
        default_input_size=(360, 480),
        needs_root=True,
        split_sizes={"train": 367, "val": 101, "test": 233},
        default_model="deeplabv3_resnet50",
        default_epochs=200,
        default_batch_size=16,
        default_lr=0.01,
    )
)

# The built-in street scenes of `vss_cli.data.synthetic`; class order and colours follow Cityscapes.
SYNTHETIC = register_dataset(
    DatasetSpec(
        name="synthetic",
        class_names=("road", "sidewalk", "building", "pole", "vegetation", "sky", "person", "car"),
        palette=(
            (128, 64, 128), (244, 35, 232), (70, 70, 70), (153, 153, 153), (107, 142, 35),
            (70, 130, 180), (220, 20, 60), (0, 0, 142),
        ),
        default_input_size=(64, 96),
        needs_root=False,
        split_sizes={"train": 320, "val": 64, "test": 64},
        default_model="unet",
        default_model_kwargs={"width": 0.25},
        train_scale=(0.75, 1.5),  # tiny images: at 0.5x the thin classes shrink below two pixels
        default_epochs=12,
        default_batch_size=16,
        default_lr=0.05,
    )
)
