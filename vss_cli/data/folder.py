"""Your own data in the layout of mmsegmentation's custom datasets: `img_dir/{train,val,test}/` and
`ann_dir/{train,val,test}/`, an image and its mask paired by their path stem below the split folder
(`img_dir/train/a/x.jpg` <-> `ann_dir/train/a/x.png`). Masks hold class ids 0..N-1 in one channel;
the ignore index (default 255) and every value outside the classes become the engine's ignore.

Classes: `classes.txt` in the root (one name per line; blank lines and `#` comments skipped), or
`--num-classes N` (names class0..classN-1). Suffixes: `--img-suffix` (default: any of .png .jpg
.jpeg .bmp .tif .tiff) and `--seg-suffix` (default .png), as mmsegmentation's `img_suffix` /
`seg_map_suffix`. These settings are the spec's `layout`, recorded in every checkpoint, so prune,
fine-tune and eval rebuild the same dataset without repeating them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from vss_cli.data.specs import IGNORE_INDEX, DatasetSpec, register_spec_factory
from vss_cli.errors import ConfigError, DataError

IMAGE_DIR, LABEL_DIR = "img_dir", "ann_dir"
CLASSES_FILE = "classes.txt"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_SEG_SUFFIX = ".png"
DEFAULT_INPUT_SIZE = (256, 256)


@dataclass(frozen=True)
class FolderLayout:
    """The settings of one folder dataset (what `DatasetSpec.layout` records)."""

    num_classes: int | None = None
    ignore_index: int = IGNORE_INDEX
    img_suffix: str | None = None  # None: any of IMAGE_EXTENSIONS
    seg_suffix: str = DEFAULT_SEG_SUFFIX

    def image_suffixes(self) -> tuple[str, ...]:
        return (self.img_suffix,) if self.img_suffix else IMAGE_EXTENSIONS


def read_classes(root: Path) -> list[str] | None:
    """The class names of `root/classes.txt`, or None when there is no such file."""
    path = root / CLASSES_FILE
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise DataError(f"{path} lists no class: write one class name per line")
    if len(set(names)) != len(names):
        raise DataError(f"{path} lists a class twice: each line must name a different class")
    return names


def palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """n distinct colours (the PASCAL VOC bit-interleaving scheme), for prediction panels."""
    colours = []
    for i in range(n):
        r = g = b = 0
        c = i + 1
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


def folder_spec(template: DatasetSpec, data_root: str | Path | None, num_classes: int | None = None,
                ignore_index: int | None = None, img_suffix: str | None = None,
                seg_suffix: str | None = None) -> DatasetSpec:
    """The spec of the folder tree at `data_root`: its classes (classes.txt or `num_classes`) and layout."""
    if data_root is None:
        raise DataError("--dataset folder needs --data-root DIR, the folder holding img_dir/ and ann_dir/ "
                        "(`vss data synth --format folder --out DIR` writes a small example)")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist: pass --data-root pointing at the folder holding "
                        "img_dir/ and ann_dir/")
    names = read_classes(root)
    if names is not None and num_classes is not None and num_classes != len(names):
        raise ConfigError(f"--num-classes {num_classes} disagrees with {root / CLASSES_FILE} ({len(names)} classes): "
                          "drop --num-classes or fix the file")
    if names is None:
        if num_classes is None:
            raise DataError(f"{root} has no {CLASSES_FILE}: write one class name per line there, or pass "
                            "--num-classes N")
        if num_classes < 2:
            raise ConfigError(f"--num-classes {num_classes} must be at least 2")
        names = [f"class{i}" for i in range(num_classes)]
    ignore = IGNORE_INDEX if ignore_index is None else int(ignore_index)
    if ignore < len(names) or ignore > 255:
        raise ConfigError(f"--ignore-index {ignore} must lie outside the class ids 0..{len(names) - 1} and "
                          "fit a mask (at most 255)")
    for flag, suffix in (("--img-suffix", img_suffix), ("--seg-suffix", seg_suffix)):
        if suffix is not None and "." not in suffix:
            raise ConfigError(f"{flag} {suffix} must end with the file extension, e.g. .jpg or _mask.png")
    layout = FolderLayout(len(names), ignore, img_suffix, seg_suffix or DEFAULT_SEG_SUFFIX)
    return DatasetSpec(**{**_template_fields(template), "class_names": tuple(names), "palette": palette(len(names)),
                          "layout": vars(layout).copy()})


def _template_fields(template: DatasetSpec) -> dict:
    from dataclasses import fields

    return {f.name: getattr(template, f.name) for f in fields(template)}


def layout_of(spec: DatasetSpec) -> FolderLayout:
    return FolderLayout(**dict(spec.layout))


def list_pairs(root: Path, split: str, layout: FolderLayout) -> tuple[dict[str, Path], dict[str, Path]]:
    """Images and masks of a split keyed by their stem below the split folder (`sub/name`)."""
    images = {}
    for suffix in layout.image_suffixes():
        for path in (root / IMAGE_DIR / split).rglob(f"*{suffix}"):
            images.setdefault(_stem(path, root / IMAGE_DIR / split, suffix), path)
    labels = {_stem(p, root / LABEL_DIR / split, layout.seg_suffix): p
              for p in (root / LABEL_DIR / split).rglob(f"*{layout.seg_suffix}")}
    return images, labels


def _stem(path: Path, folder: Path, suffix: str) -> str:
    relative = path.relative_to(folder).as_posix()
    return relative[: -len(suffix)] if relative.endswith(suffix) else relative


def label_lookup(layout: FolderLayout) -> np.ndarray:
    """Mask value -> class id; the ignore index and anything outside the classes -> the engine's ignore."""
    lookup = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lookup[: layout.num_classes] = np.arange(layout.num_classes, dtype=np.uint8)
    return lookup


def read_label(path: Path, layout: FolderLayout) -> np.ndarray:
    with Image.open(path) as label:
        values = np.asarray(label).astype(np.int64)
    return label_lookup(layout)[np.clip(values, 0, 255)]


class FolderSegmentation(Dataset):
    """One split of a folder dataset; items are `transform(image, label)`."""

    def __init__(self, root: str | Path, split: str, spec: DatasetSpec, transform=None) -> None:
        self.root, self.split, self.transform = Path(root).expanduser(), split, transform
        self.layout = layout_of(spec)
        images, labels = list_pairs(self.root, split, self.layout)
        if not images:
            raise DataError(f"no images in {self.root / IMAGE_DIR / split}: expected files ending in "
                            f"{' or '.join(self.layout.image_suffixes())}; run `vss data check --dataset folder "
                            f"--data-root {self.root}`")
        missing = sorted(images.keys() - labels.keys())
        if missing:
            raise DataError(f"{len(missing)} images in {self.root / IMAGE_DIR / split} have no mask, e.g. "
                            f"{images[missing[0]]}: run `vss data check --dataset folder --data-root {self.root}`")
        self.samples = [(images[stem], labels[stem]) for stem in sorted(images)]

    def __len__(self) -> int:
        return len(self.samples)

    def raw_label(self, index: int) -> np.ndarray:
        return read_label(self.samples[index][1], self.layout)

    def __getitem__(self, index: int):
        image_path, label_path = self.samples[index]
        with Image.open(image_path) as image:
            image = image.convert("RGB")
        label = read_label(label_path, self.layout)
        return self.transform(image, label) if self.transform is not None else (image, label)


FOLDER = register_spec_factory(
    DatasetSpec(
        name="folder",
        class_names=(),
        palette=(),
        default_input_size=DEFAULT_INPUT_SIZE,
        needs_root=True,
        default_model="unet",
        default_epochs=50,
        default_batch_size=8,
        default_lr=0.01,
    ),
    folder_spec,
)
