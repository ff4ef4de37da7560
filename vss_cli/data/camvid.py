"""CamVid in the SegNet layout: `train/ trainannot/ val/ valannot/ test/ testannot/`, an image and its
label sharing a file name. Labels 0..10 are the 11 classes; 11 (void) and anything above -> ignore."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vss_cli.data.specs import CAMVID, IGNORE_INDEX
from vss_cli.errors import DataError

VOID_LABEL = 11
VALID_LABELS = frozenset(range(VOID_LABEL + 1))
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def annot_dir(split: str) -> str:
    return f"{split}annot"


def _label_lookup() -> np.ndarray:
    lookup = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lookup[: CAMVID.num_classes] = np.arange(CAMVID.num_classes, dtype=np.uint8)
    return lookup


LABEL_LOOKUP = _label_lookup()


def map_labels(raw) -> np.ndarray:
    """CamVid label values -> class ids; void (11) and out-of-range values -> 255."""
    values = np.asarray(raw).astype(np.int64)
    return LABEL_LOOKUP[np.clip(values, 0, 255)]


def list_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if folder.is_dir() else []


def read_label(path: Path) -> np.ndarray:
    with Image.open(path) as label:
        return map_labels(np.array(label))


class CamVidSegmentation(Dataset):
    """CamVid `split` (train, val or test); items are `transform(image, label)`."""

    def __init__(self, root: str | Path, split: str = "train", transform=None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"CamVid root {self.root} does not exist: pass --data-root DIR, the folder holding "
                            f"train/ trainannot/ val/ valannot/")
        self.split, self.transform = split, transform
        images = list_files(self.root / split)
        if not images:
            raise DataError(f"no CamVid images in {self.root / split}: expected {split}/*.png beside "
                            f"{annot_dir(split)}/; run `vss data check --data-root {self.root}`")
        self.samples = [(image, self.root / annot_dir(split) / image.name) for image in images]
        missing = [label for _, label in self.samples if not label.is_file()]
        if missing:
            raise DataError(f"{len(missing)} CamVid labels are missing, e.g. {missing[0]}: run "
                            f"`vss data check --data-root {self.root}` for the list")

    def __len__(self) -> int:
        return len(self.samples)

    def raw_label(self, index: int) -> np.ndarray:
        return read_label(self.samples[index][1])

    def __getitem__(self, index: int):
        image_path, label_path = self.samples[index]
        with Image.open(image_path) as image:
            image = image.convert("RGB")
        label = read_label(label_path)
        return self.transform(image, label) if self.transform is not None else (image, label)


def iter_label_maps(source) -> Iterable[np.ndarray]:
    """Label maps (class ids, 255 = ignore) from a CamVid root (its train split), a dataset with
    `raw_label(i)`, or any iterable of arrays."""
    if isinstance(source, (str, Path)):
        source = CamVidSegmentation(source, "train")
    if hasattr(source, "raw_label"):
        return (source.raw_label(i) for i in range(len(source)))
    return (np.asarray(label) for label in source)


def median_frequency_weights(dataset_or_root, num_classes: int = CAMVID.num_classes) -> torch.Tensor:
    """Median-frequency balancing (Eigen & Fergus, ICCV 2015, as used by SegNet):
    weight_c = median(freq) / freq_c, freq_c = pixels of c / pixels of the images that contain c.
    Classes that never occur get weight 0."""
    class_pixels = np.zeros(num_classes, dtype=np.float64)
    image_pixels = np.zeros(num_classes, dtype=np.float64)
    for label in iter_label_maps(dataset_or_root):
        counts = np.bincount(label[label < num_classes].ravel(), minlength=num_classes)[:num_classes]
        class_pixels += counts
        image_pixels[counts > 0] += label.size
    present = class_pixels > 0
    freq = np.divide(class_pixels, image_pixels, out=np.zeros_like(class_pixels), where=present)
    weights = np.zeros(num_classes, dtype=np.float64)
    if present.any():
        weights[present] = np.median(freq[present]) / freq[present]
    return torch.tensor(weights, dtype=torch.float32)
