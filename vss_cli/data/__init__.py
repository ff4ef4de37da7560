"""Datasets: specs, the built-in synthetic scenes, Cityscapes, CamVid and image/mask folders, paired
transforms, loaders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from vss_cli.data.camvid import CamVidSegmentation, median_frequency_weights
from vss_cli.data.cityscapes import CityscapesSegmentation
from vss_cli.data.folder import FolderSegmentation
from vss_cli.data.specs import (
    SPLITS,
    DatasetSpec,
    dataset_defaults,
    get_spec,
    list_datasets,
    recorded_spec,
    register_dataset,
)
from vss_cli.data.synthetic import SyntheticScenes
from vss_cli.data.transforms import eval_transform, train_transform
from vss_cli.errors import ConfigError, DataError
from vss_cli.signals import leave_stop_signals_to_the_parent

__all__ = [
    "BuildRequest", "DatasetSpec", "build_dataset", "build_loader", "class_weights", "dataset_defaults", "get_spec",
    "list_datasets",
    "recorded_spec", "register_dataset", "register_builder",
]

# The synthetic scenes are one fixed set, whatever the run's seed, so that every training run and
# every evaluation (baseline vs candidate, seed 0 vs seed 2) sees the same images.
SYNTHETIC_DATA_SEED = 0


@dataclass(frozen=True)
class BuildRequest:
    """What a dataset builder receives: the split, the checked root, the working size and transform."""

    split: str
    root: Path | None
    size: tuple[int, int]
    transform: Callable | None
    spec: DatasetSpec | None = None


Builder = Callable[[BuildRequest], Dataset]
_BUILDERS: dict[str, Builder] = {}


def register_builder(name: str) -> Callable[[Builder], Builder]:
    """Decorator: the function that builds dataset `name` (a spec of that name must be registered)."""

    def decorate(builder: Builder) -> Builder:
        _BUILDERS[name] = builder
        return builder

    return decorate


@register_builder("synthetic")
def _build_synthetic(request: BuildRequest) -> Dataset:
    # rendered at the working size directly, so evaluation needs no resize
    return SyntheticScenes(request.split, size=request.size, seed=SYNTHETIC_DATA_SEED,
                           transform=request.transform)


@register_builder("cityscapes")
def _build_cityscapes(request: BuildRequest) -> Dataset:
    return CityscapesSegmentation(request.root, request.split, request.transform)


@register_builder("camvid")
def _build_camvid(request: BuildRequest) -> Dataset:
    return CamVidSegmentation(request.root, request.split, request.transform)


@register_builder("folder")
def _build_folder(request: BuildRequest) -> Dataset:
    return FolderSegmentation(request.root, request.split, request.spec, request.transform)


def _require_root(spec: DatasetSpec, data_root: str | Path | None) -> Path | None:
    if data_root is None:
        if spec.needs_root:
            raise DataError(f"{spec.name} needs its files: pass --data-root DIR "
                            f"(or `vss data synth --out DIR --format {spec.name}` to make a small test tree)")
        return None
    root = Path(data_root).expanduser()
    if spec.needs_root and not root.is_dir():
        raise DataError(f"data root {root} does not exist: pass --data-root pointing at the {spec.name} folder")
    return root


def build_dataset(name: str | DatasetSpec, split: str, *, data_root: str | Path | None = None,
                  input_size: tuple[int, int] | None = None, train: bool = False, seed: int = 0) -> Dataset:
    """A Dataset of `(image float32 [3, H, W] normalised, label int64 [H, W])`, ignore pixels = 255.

    `train=True` applies random scale (`spec.train_scale` of `input_size`) / crop / flip; otherwise
    images are resized to `input_size` (default: the spec's). `seed` never changes the data (see
    SYNTHETIC_DATA_SEED); augmentation draws from torch's RNG, i.e. `torch.manual_seed` in the main
    process and the loader's seeded per-worker streams. `name` may be a resolved spec (a folder
    dataset's, with its classes and layout).
    """
    spec = get_spec(name, data_root)
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
    root = _require_root(spec, data_root)
    size = tuple(input_size) if input_size is not None else spec.default_input_size
    if train:
        transform = train_transform(size, spec.mean, spec.std, scale=spec.train_scale)
    else:
        transform = eval_transform(size, spec.mean, spec.std)
    return _BUILDERS[spec.name](BuildRequest(split, root, size, transform, spec))


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation sharding without padding: rank r takes items r, r + world, ... so that confusion
    matrices summed over ranks count every image exactly once (DistributedSampler repeats some)."""

    def __init__(self, dataset: Dataset, rank: int | None = None, world: int | None = None) -> None:
        dist = torch.distributed
        self.rank = dist.get_rank() if rank is None else rank
        self.world = dist.get_world_size() if world is None else world
        self.indices = list(range(self.rank, len(dataset), self.world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_loader(dataset: Dataset, *, batch_size: int, train: bool, num_workers: int = 0, seed: int = 0,
                 distributed: bool = False, pin_memory: bool | None = None) -> DataLoader:
    """Training loaders shuffle with a generator seeded by `seed` and drop a ragged last batch (when
    the dataset holds more than one batch); `distributed` shards training with a DistributedSampler
    and evaluation with `ShardSampler` (no padding, so summed metrics are exact)."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size} must be at least 1")
    drop_last = train and len(dataset) > batch_size
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if distributed:
        sampler = (DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=drop_last) if train
                   else ShardSampler(dataset))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=leave_stop_signals_to_the_parent if num_workers > 0 else None,
    )


def class_weights(name: str | DatasetSpec, data_root: str | Path | None = None, *,
                  split: str = "train") -> torch.Tensor:
    """Median-frequency class weights of a dataset's raw training labels (for a weighted loss)."""
    spec = get_spec(name, data_root)
    root = _require_root(spec, data_root)
    dataset = _BUILDERS[spec.name](BuildRequest(split, root, spec.default_input_size, None, spec))
    return median_frequency_weights(dataset, spec.num_classes)
