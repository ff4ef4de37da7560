"""Cityscapes (fine annotations): `leftImg8bit/{split}/<city>/*_leftImg8bit.png` paired with
`gtFine/{split}/<city>/*_gtFine_labelTrainIds.png`, or `*_gtFine_labelIds.png` mapped to train ids
on the fly with the official label table (Cordts et al., CVPR 2016; cityscapesScripts `labels.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from vss_cli.data.specs import IGNORE_INDEX
from vss_cli.errors import DataError

IMAGE_DIR, LABEL_DIR = "leftImg8bit", "gtFine"
IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"
COLOR_SUFFIX = "_gtFine_color.png"


class CityscapesLabel(NamedTuple):
    id: int
    name: str
    train_id: int


# The official table: every label id, its name and its train id (255 = ignored in training/eval).
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = tuple(CityscapesLabel(*row) for row in (
    (0, "unlabeled", 255),
    (1, "ego vehicle", 255),
    (2, "rectification border", 255),
    (3, "out of roi", 255),
    (4, "static", 255),
    (5, "dynamic", 255),
    (6, "ground", 255),
    (7, "road", 0),
    (8, "sidewalk", 1),
    (9, "parking", 255),
    (10, "rail track", 255),
    (11, "building", 2),
    (12, "wall", 3),
    (13, "fence", 4),
    (14, "guard rail", 255),
    (15, "bridge", 255),
    (16, "tunnel", 255),
    (17, "pole", 5),
    (18, "polegroup", 255),
    (19, "traffic light", 6),
    (20, "traffic sign", 7),
    (21, "vegetation", 8),
    (22, "terrain", 9),
    (23, "sky", 10),
    (24, "person", 11),
    (25, "rider", 12),
    (26, "car", 13),
    (27, "truck", 14),
    (28, "bus", 15),
    (29, "caravan", 255),
    (30, "trailer", 255),
    (31, "train", 16),
    (32, "motorcycle", 17),
    (33, "bicycle", 18),
    (-1, "license plate", 255),
))

VALID_LABEL_IDS = frozenset(label.id for label in CITYSCAPES_LABELS)
VALID_TRAIN_IDS = frozenset(range(19)) | {IGNORE_INDEX}


def _label_id_lookup() -> np.ndarray:
    """A 256-entry table id -> train id; index 255 stands for id -1 (and anything unknown)."""
    lookup = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        if label.id >= 0:
            lookup[label.id] = label.train_id
    return lookup


LABEL_ID_TO_TRAIN_ID = _label_id_lookup()


def label_ids_to_train_ids(label_ids) -> np.ndarray:
    """Map an array of Cityscapes label ids (any int dtype, -1 allowed) to uint8 train ids."""
    ids = np.asarray(label_ids).astype(np.int64)
    return LABEL_ID_TO_TRAIN_ID[np.clip(ids, -1, 255) % 256]


def image_to_label_stem(image_path: Path, root: Path) -> Path:
    """`leftImg8bit/train/x/x_0_1_leftImg8bit.png` -> `gtFine/train/x/x_0_1_gtFine` (add a suffix)."""
    relative = image_path.relative_to(root / IMAGE_DIR)
    return root / LABEL_DIR / relative.parent / relative.name[: -len(IMAGE_SUFFIX)]


def find_label(image_path: Path, root: Path) -> Path | None:
    """The train-id label of an image if present, else its label-id label, else None."""
    stem = image_to_label_stem(image_path, root)
    for suffix in (TRAIN_ID_SUFFIX, LABEL_ID_SUFFIX):
        candidate = stem.with_name(stem.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def list_images(root: Path, split: str) -> list[Path]:
    return sorted((root / IMAGE_DIR / split).glob(f"*/*{IMAGE_SUFFIX}"))


def read_train_ids(label_path: Path) -> np.ndarray:
    """A label file as uint8 train ids (label-id files are mapped through the official table)."""
    with Image.open(label_path) as label:
        array = np.array(label)
    if label_path.name.endswith(LABEL_ID_SUFFIX):
        return label_ids_to_train_ids(array)
    return array.astype(np.uint8)


def require_root(root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"Cityscapes root {root} does not exist: pass --data-root DIR, the folder holding "
                        f"{IMAGE_DIR}/ and {LABEL_DIR}/")
    return root


class CityscapesSegmentation(Dataset):
    """Cityscapes fine annotations for `split` (train or val); items are `transform(image, label)`."""

    def __init__(self, root: str | Path, split: str = "train", transform=None) -> None:
        if split == "test":
            raise DataError("Cityscapes test labels are withheld (every pixel is ignore), so the test split "
                            "cannot be trained or evaluated on: use the val split")
        self.root = require_root(Path(root))
        self.split, self.transform = split, transform
        images = list_images(self.root, split)
        if not images:
            raise DataError(f"no Cityscapes images in {self.root / IMAGE_DIR / split}: expected "
                            f"<city>/*{IMAGE_SUFFIX}; run `vss data check --data-root {self.root}`")
        self.samples = [(image, find_label(image, self.root)) for image in images]
        missing = [image for image, label in self.samples if label is None]
        if missing:
            raise DataError(f"{len(missing)} Cityscapes images have no label, e.g. {missing[0]}: run "
                            f"`vss data check --data-root {self.root}` for the list")

    def __len__(self) -> int:
        return len(self.samples)

    def raw_label(self, index: int) -> np.ndarray:
        return read_train_ids(self.samples[index][1])

    def __getitem__(self, index: int):
        image_path, label_path = self.samples[index]
        with Image.open(image_path) as image:
            image = image.convert("RGB")
        label = read_train_ids(label_path)
        return self.transform(image, label) if self.transform is not None else (image, label)
