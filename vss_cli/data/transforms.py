"""Paired image/label transforms (torchvision references/segmentation style).

Each transform is a small callable `(image, label) -> (image, label)`. Inputs may be PIL images,
numpy arrays (image H×W×3, label H×W) or tensors (image [3, H, W], label [H, W]); geometric steps
work on tensors, so the image is resized bilinearly and the label by nearest neighbour, and padding
fills the label with the ignore index. Randomness comes from torch's generator, so
`torch.manual_seed` (and the DataLoader's per-worker seeding) makes augmentation reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from vss_cli.data.specs import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD

Size = tuple[int, int]


def image_to_tensor(image) -> torch.Tensor:
    """PIL / numpy H×W(×3) / tensor -> tensor [3, H, W] (dtype kept; a copy of non-tensor input)."""
    if isinstance(image, torch.Tensor):
        return image
    array = np.array(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def label_to_tensor(label) -> torch.Tensor:
    """PIL / numpy H×W / tensor -> tensor [H, W] (a copy of non-tensor input)."""
    if isinstance(label, torch.Tensor):
        return label
    return torch.from_numpy(np.array(label))


def as_tensors(image, label) -> tuple[torch.Tensor, torch.Tensor]:
    return image_to_tensor(image), label_to_tensor(label)


def nearest_resize(label: torch.Tensor, size: Size) -> torch.Tensor:
    """Nearest-neighbour resize by index sampling (exact for any integer dtype)."""
    height, width = label.shape[-2:]
    rows = ((torch.arange(size[0]) + 0.5) * height / size[0]).long().clamp_(max=height - 1)
    cols = ((torch.arange(size[1]) + 0.5) * width / size[1]).long().clamp_(max=width - 1)
    return label[..., rows[:, None], cols[None, :]]


def resize_pair(image: torch.Tensor, label: torch.Tensor, size: Size) -> tuple[torch.Tensor, torch.Tensor]:
    if tuple(image.shape[-2:]) == tuple(size):
        return image, label
    image = TF.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    return image, nearest_resize(label, size)


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


class Compose:
    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, image, label):
        for transform in self.transforms:
            image, label = transform(image, label)
        return image, label

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomScale:
    """Resize by a random factor in [min_scale, max_scale]; with `base_size`, factor 1 is the
    smallest resize that covers `base_size` (so the random crop that follows sees scale 1 = input size)."""

    def __init__(self, min_scale: float = 0.5, max_scale: float = 2.0, base_size: Size | None = None) -> None:
        self.min_scale, self.max_scale, self.base_size = min_scale, max_scale, base_size

    def __call__(self, image, label):
        image, label = as_tensors(image, label)
        height, width = label.shape[-2:]
        factor = _uniform(self.min_scale, self.max_scale)
        if self.base_size is not None:
            factor *= max(self.base_size[0] / height, self.base_size[1] / width)
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        return resize_pair(image, label, size)


class RandomCrop:
    """A random `size` crop; smaller inputs are padded at the bottom/right (image 0, label ignore)."""

    def __init__(self, size: Size, ignore_index: int = IGNORE_INDEX) -> None:
        self.size, self.ignore_index = tuple(size), ignore_index

    def __call__(self, image, label):
        image, label = as_tensors(image, label)
        height, width = label.shape[-2:]
        pad_h, pad_w = max(self.size[0] - height, 0), max(self.size[1] - width, 0)
        if pad_h or pad_w:
            image = TF.pad(image, [0, 0, pad_w, pad_h], fill=0)
            label = TF.pad(label[None], [0, 0, pad_w, pad_h], fill=self.ignore_index)[0]
        top = int(torch.randint(0, label.shape[-2] - self.size[0] + 1, ()))
        left = int(torch.randint(0, label.shape[-1] - self.size[1] + 1, ()))
        rows, cols = slice(top, top + self.size[0]), slice(left, left + self.size[1])
        return image[..., rows, cols], label[..., rows, cols]


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image, label):
        image, label = as_tensors(image, label)
        if float(torch.rand(())) < self.p:
            return image.flip(-1), label.flip(-1)
        return image, label


class Resize:
    """Resize to exactly `size` (H, W): image bilinear, label nearest."""

    def __init__(self, size: Size) -> None:
        self.size = tuple(size)

    def __call__(self, image, label):
        return resize_pair(*as_tensors(image, label), self.size)


class ToTensor:
    """Image -> float32 [3, H, W] in [0, 1]; label -> int64 [H, W]."""

    def __call__(self, image, label):
        image, label = as_tensors(image, label)
        if not image.is_floating_point():
            image = image.float().div_(255.0)
        return image.contiguous(), label.long().contiguous()


class Normalize:
    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = list(mean), list(std)

    def __call__(self, image, label):
        return TF.normalize(image, self.mean, self.std), label


def train_transform(input_size: Size, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    scale: tuple[float, float] = (0.5, 2.0)) -> Compose:
    """Random scale (relative to `input_size`), random crop to `input_size`, flip, tensor, normalise."""
    return Compose([
        RandomScale(*scale, base_size=input_size),
        RandomCrop(input_size),
        RandomHorizontalFlip(0.5),
        ToTensor(),
        Normalize(mean, std),
    ])


def eval_transform(input_size: Size | None, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> Compose:
    """Resize to `input_size` (None = keep the full resolution), tensor, normalise."""
    steps = [Resize(input_size)] if input_size is not None else []
    return Compose([*steps, ToTensor(), Normalize(mean, std)])
