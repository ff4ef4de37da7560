"""Write synthetic scenes as a real-format dataset tree (Cityscapes, CamVid, or an mmsegmentation-style
image/mask folder), for trying the real-data code paths and `vss data check` without downloading anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vss_cli.data import folder
from vss_cli.data.camvid import VOID_LABEL, annot_dir
from vss_cli.data.cityscapes import (
    COLOR_SUFFIX,
    IMAGE_DIR,
    IMAGE_SUFFIX,
    LABEL_DIR,
    LABEL_ID_SUFFIX,
    TRAIN_ID_SUFFIX,
    label_ids_to_train_ids,
)
from vss_cli.data.specs import CITYSCAPES, SPLITS, SYNTHETIC
from vss_cli.data.synthetic import render_scene, scene_rng
from vss_cli.errors import ConfigError

# synthetic class name -> the id the real format uses for it
CITYSCAPES_LABEL_ID = {"road": 7, "sidewalk": 8, "building": 11, "pole": 17, "vegetation": 21, "sky": 23,
                       "person": 24, "car": 26}
CITYSCAPES_UNLABELED = 0
CAMVID_LABEL = {"sky": 0, "building": 1, "pole": 2, "road": 3, "sidewalk": 4, "vegetation": 5, "car": 8,
                "person": 9}
CITY_OF_SPLIT = {"train": "synthcity", "val": "synthville", "test": "synthtown"}
SPLIT_FRACTIONS = {"val": 0.2, "test": 0.2}


@dataclass(frozen=True)
class TreeOptions:
    size: tuple[int, int]
    seed: int = 0
    with_train_ids: bool = False
    with_color: bool = False


@dataclass
class SynthTree:
    """What `write_tree` wrote."""

    root: Path
    format: str
    size: tuple[int, int]
    split_counts: dict[str, int] = field(default_factory=dict)
    files: int = 0

    def summary(self) -> str:
        splits = ", ".join(f"{split} {count}" for split, count in self.split_counts.items())
        return (f"wrote {sum(self.split_counts.values())} {self.format}-format scenes ({splits}) at "
                f"{self.size[0]}x{self.size[1]}, {self.files} files, to {self.root}")


def label_lookup(ids_by_name: dict[str, int], ignore_value: int) -> np.ndarray:
    """256-entry table: synthetic class id -> the format's id; everything else (ignore) -> `ignore_value`."""
    lookup = np.full(256, ignore_value, dtype=np.uint8)
    for name, target in ids_by_name.items():
        lookup[SYNTHETIC.class_names.index(name)] = target
    return lookup


CITYSCAPES_LOOKUP = label_lookup(CITYSCAPES_LABEL_ID, CITYSCAPES_UNLABELED)
CAMVID_LOOKUP = label_lookup(CAMVID_LABEL, VOID_LABEL)


def split_counts(n: int) -> dict[str, int]:
    """About 60/20/20 train/val/test, at least one scene each."""
    if n < len(SPLITS):
        raise ConfigError(f"--n {n} is too small: pass at least {len(SPLITS)} (one scene per split)")
    held_out = {split: max(1, round(n * fraction)) for split, fraction in SPLIT_FRACTIONS.items()}
    return {"train": n - sum(held_out.values()), **held_out}


def save_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG under a temporary name and rename it, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    Image.fromarray(array).save(partial, format="PNG")
    partial.replace(path)


def write_cityscapes_scene(out: Path, split: str, index: int, image: np.ndarray, label: np.ndarray,
                           options: TreeOptions) -> int:
    """One Cityscapes sample; test labels are withheld as in the real release (all unlabeled)."""
    city = CITY_OF_SPLIT[split]
    stem = f"{city}_{index:06d}_000019"
    label_ids = CITYSCAPES_LOOKUP[label] if split != "test" else np.zeros_like(label)
    save_png(image, out / IMAGE_DIR / split / city / f"{stem}{IMAGE_SUFFIX}")
    label_folder = out / LABEL_DIR / split / city
    save_png(label_ids, label_folder / f"{stem}{LABEL_ID_SUFFIX}")
    written = 2
    train_ids = label_ids_to_train_ids(label_ids)
    if options.with_train_ids:
        save_png(train_ids, label_folder / f"{stem}{TRAIN_ID_SUFFIX}")
        written += 1
    if options.with_color:
        palette = np.zeros((256, 3), np.uint8)
        palette[: CITYSCAPES.num_classes] = CITYSCAPES.palette
        save_png(palette[train_ids], label_folder / f"{stem}{COLOR_SUFFIX}")
        written += 1
    return written


def write_camvid_scene(out: Path, split: str, index: int, image: np.ndarray, label: np.ndarray,
                       options: TreeOptions) -> int:
    name = f"synth_{split}_{index:04d}.png"
    save_png(image, out / split / name)
    save_png(CAMVID_LOOKUP[label], out / annot_dir(split) / name)
    return 2


def write_folder_scene(out: Path, split: str, index: int, image: np.ndarray, label: np.ndarray,
                       options: TreeOptions) -> int:
    """`img_dir/<split>/<stem>.png` and `ann_dir/<split>/<stem>.png` (the synthetic class ids, 255 = ignore),
    plus `classes.txt` once."""
    name = f"synth_{split}_{index:04d}.png"
    save_png(image, out / folder.IMAGE_DIR / split / name)
    save_png(label.astype(np.uint8), out / folder.LABEL_DIR / split / name)
    classes = out / folder.CLASSES_FILE
    if classes.is_file():
        return 2
    classes.write_text("".join(f"{n}\n" for n in SYNTHETIC.class_names), encoding="utf-8")
    return 3


SceneWriter = Callable[[Path, str, int, np.ndarray, np.ndarray, TreeOptions], int]
WRITERS: dict[str, SceneWriter] = {"cityscapes": write_cityscapes_scene, "camvid": write_camvid_scene,
                                   "folder": write_folder_scene}


def write_tree(out: str | Path, fmt: str = "cityscapes", n: int = 24, size: tuple[int, int] = (256, 512),
               seed: int = 0, with_train_ids: bool = False, with_color: bool = False) -> SynthTree:
    """Render `n` synthetic scenes at `size` (H, W) and write them under `out` in format `fmt`."""
    if fmt not in WRITERS:
        raise ConfigError(f"unknown format '{fmt}': choose one of {', '.join(WRITERS)}")
    if min(size) < 8:
        raise ConfigError(f"--size {size[0]},{size[1]} is too small: pass at least 8,8")
    writer, options = WRITERS[fmt], TreeOptions(tuple(size), seed, with_train_ids, with_color)
    tree = SynthTree(Path(out).expanduser(), fmt, tuple(size), split_counts(n))
    for split, count in tree.split_counts.items():
        for index in range(count):
            image, label = render_scene(scene_rng(seed, split, index), *size)
            tree.files += writer(tree.root, split, index, image, label, options)
    return tree

