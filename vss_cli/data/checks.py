"""`vss data check`: find what would break training on a dataset tree, file by file, before it does.

Checks: the root and the expected folders (near-miss names are pointed out), image/label pairing,
unreadable or truncated PNGs, label mode (single channel), label values outside the format's valid
set, image/label size mismatch, and per-split counts against the official sizes. The valid values
per format are in `label_rules`; telling a tree's format without `--dataset` is `detect`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vss_cli.data import camvid, cityscapes, folder
from vss_cli.data.label_rules import (
    CAMVID_LABELS,
    CITYSCAPES_LABEL_IDS,
    LabelRule,
    cityscapes_label_rule,
    folder_label_rule,
)
from vss_cli.data.specs import SPLITS, DatasetSpec, get_spec
from vss_cli.errors import ConfigError, DataError

SINGLE_CHANNEL_MODES = frozenset({"1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"})
Progress = Callable[[str, int, int], None]  # (split, done, total)


@dataclass
class Finding:
    severity: str  # "error" | "warning" | "info"
    split: str  # "" when it concerns the whole tree
    path: str  # relative to the data root ("" = the root itself)
    problem: str


@dataclass
class SplitCount:
    split: str
    images: int
    labels: int
    official: int | None


@dataclass
class CheckReport:
    """Everything `check_dataset` found; the dataset is usable when there is no error."""

    dataset: str
    root: Path | None
    findings: list[Finding] = field(default_factory=list)
    counts: list[SplitCount] = field(default_factory=list)
    sample: int | None = None  # decode only this many evenly spaced pairs per split (None: every pair)

    @property
    def usable(self) -> bool:
        return self.errors == 0

    @property
    def errors(self) -> int:
        return sum(f.severity == "error" for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.severity == "warning" for f in self.findings)

    def relative(self, path: Path | str) -> str:
        path = Path(path)
        try:
            return path.relative_to(self.root).as_posix() if self.root else path.as_posix()
        except ValueError:
            return path.as_posix()

    def add(self, severity: str, split: str, path: Path | str, problem: str) -> None:
        self.findings.append(Finding(severity, split, self.relative(path) if path else "", problem))

    def error(self, split: str, path: Path | str, problem: str) -> None:
        self.add("error", split, path, problem)

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "root": str(self.root) if self.root else None,
            "usable": self.usable,
            "errors": self.errors,
            "warnings": self.warnings,
            "counts": [asdict(c) for c in self.counts],
            "findings": [asdict(f) for f in self.findings],
        }


@dataclass
class PngProbe:
    mode: str = ""
    size: tuple[int, int] = (0, 0)  # (W, H) as PIL reports it
    values: np.ndarray | None = None
    problem: str | None = None


def distinct_values(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return np.flatnonzero(np.bincount(array.ravel(), minlength=256))
    return np.unique(array)


def probe_png(path: Path, *, want_values: bool = False) -> PngProbe:
    """Open and fully decode an image file (catches truncation); optionally collect its values."""
    try:
        with Image.open(path) as image:
            image.load()
            values = None
            if want_values and image.mode in SINGLE_CHANNEL_MODES:
                values = distinct_values(np.array(image))
            return PngProbe(image.mode, image.size, values)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return PngProbe(problem=f"cannot be read (truncated or corrupt?): {exc}")


def check_pair(report: CheckReport, split: str, image_path: Path, label_path: Path,
               rule: LabelRule) -> list[int] | None:
    """Both files decode; the label is single-channel with valid values and the image's size.
    Returns the label's distinct values (None when they could not be read)."""
    image = probe_png(image_path)
    label = probe_png(label_path, want_values=True)
    if image.problem:
        report.error(split, image_path, f"image {image.problem}")
    if label.problem:
        report.error(split, label_path, f"label {label.problem}")
    if image.problem or label.problem:
        return None
    if image.mode != "RGB":
        report.add("warning", split, image_path, f"image mode is {image.mode}, not RGB (it will be converted)")
    if label.mode not in SINGLE_CHANNEL_MODES:
        report.error(split, label_path, f"label is {label.mode} ({len(label.mode)} channels): labels must be "
                                        "single-channel class ids, not a colour-coded image")
    values = label.values.tolist() if label.values is not None and label.mode in SINGLE_CHANNEL_MODES else None
    if values is not None:
        bad = [v for v in values if v not in rule.valid]
        if bad:
            report.error(split, label_path, rule.problem(bad, values))
    if image.size != label.size:
        report.error(split, label_path, f"label is {label.size[0]}x{label.size[1]} but its image "
                                        f"{image_path.name} is {image.size[0]}x{image.size[1]} (W x H)")
    return values


def first_missing(root: Path, folder: Path) -> Path | None:
    """The outermost missing folder on the way from `root` down to `folder` (None when it exists)."""
    current = root
    for part in folder.relative_to(root).parts:
        current = current / part
        if not current.is_dir():
            return current
    return None


def require_folder(report: CheckReport, split: str, folder: Path) -> bool:
    """An error naming the missing folder, pointing at a near-miss sibling if there is one."""
    missing = first_missing(report.root, folder)
    if missing is None:
        return True
    siblings = [p.name for p in missing.parent.iterdir() if p.is_dir()]
    near = difflib.get_close_matches(missing.name, siblings, n=1, cutoff=0.6)
    hint = (f"found {near[0]}/ instead: rename it to {missing.name}/" if near
            else f"create it or point --data-root at the folder that holds {missing.name}/")
    report.error(split, missing, f"missing folder {report.relative(missing)}/ ({hint})")
    return False


def require_folders(report: CheckReport, split: str, folders: Sequence[Path]) -> bool:
    """Check every folder (so each missing one is reported), True when all exist."""
    found = [require_folder(report, split, folder) for folder in folders]
    return all(found)


def check_count(report: CheckReport, spec: DatasetSpec, split: str, images: int, labels: int,
                where: Path) -> None:
    official = spec.split_sizes.get(split)
    report.counts.append(SplitCount(split, images, labels, official))
    if images == 0:
        report.error(split, where, f"no images in the {split} split")
    elif official and images < official:
        report.add("warning", split, where, f"{images} of the official {official} {split} images (a subset is "
                                            "fine for trying things; metrics will not match published ones)")
    elif official and images > official:
        report.add("info", split, where, f"{images} {split} images, more than the official {official}")


def sampled(pairs: list, sample: int | None) -> list:
    """`sample` evenly spaced items of `pairs` (all of them when there are no more, or sample is None)."""
    if sample is None or len(pairs) <= sample:
        return pairs
    return [pairs[i * len(pairs) // sample] for i in range(sample)]


def check_pairs(report: CheckReport, split: str, pairs: list[tuple[Path, Path, LabelRule]],
                progress: Progress | None) -> dict[Path, list[int]]:
    """Check each (sampled) pair; returns the distinct values of every label that could be read."""
    pairs = sampled(pairs, report.sample)
    seen = {}
    for done, (image, label, rule) in enumerate(pairs, start=1):
        values = check_pair(report, split, image, label, rule)
        if values is not None:
            seen[label] = values
        if progress:
            progress(split, done, len(pairs))
    return seen


# ---- per-format checkers -------------------------------------------------------------------------

def check_synthetic(report: CheckReport, spec: DatasetSpec, splits: Sequence[str], progress: Progress | None) -> None:
    for split in splits:
        size = spec.split_sizes[split]
        report.counts.append(SplitCount(split, size, size, size))
    report.add("info", "", "", "built-in: scenes are generated in memory, no files to check")


def cityscapes_label_stems(label_folder: Path) -> dict[Path, Path]:
    """Label files of a split keyed by their sample stem (`<city>/<city>_<seq>_<frame>`)."""
    stems = {}
    for suffix in (cityscapes.LABEL_ID_SUFFIX, cityscapes.TRAIN_ID_SUFFIX):
        for label in label_folder.glob(f"*/*{suffix}"):
            stems[label.parent / label.name[: -len(suffix)]] = label
    return stems


def check_cityscapes_split(report: CheckReport, spec: DatasetSpec, split: str, progress: Progress | None) -> None:
    root = report.root
    image_folder = root / cityscapes.IMAGE_DIR / split
    label_folder = root / cityscapes.LABEL_DIR / split
    if not require_folders(report, split, (image_folder, label_folder)):
        report.counts.append(SplitCount(split, 0, 0, spec.split_sizes.get(split)))
        return
    for stray in sorted(image_folder.glob(f"*{cityscapes.IMAGE_SUFFIX}")):
        report.error(split, stray, f"image is not inside a city folder: move it to {split}/<city>/")
    images = cityscapes.list_images(root, split)
    label_stems = cityscapes_label_stems(label_folder)
    pairs = []
    for image in images:
        label = cityscapes.find_label(image, root)
        if label is None:
            expected = cityscapes.image_to_label_stem(image, root)
            report.error(split, image, f"image has no label: expected "
                                       f"{report.relative(expected)}{cityscapes.LABEL_ID_SUFFIX}")
        else:
            pairs.append((image, label, cityscapes_label_rule(label)))
    image_stems = {cityscapes.image_to_label_stem(image, root) for image in images}
    for stem, label in sorted(label_stems.items()):
        if stem not in image_stems:
            expected = image_folder / stem.parent.name / f"{stem.name}{cityscapes.IMAGE_SUFFIX}"
            report.error(split, label, f"label has no image: expected {report.relative(expected)}")
    check_count(report, spec, split, len(images), len(label_stems), image_folder)
    if split == "test":
        report.add("info", split, label_folder, "test labels are withheld in Cityscapes: the split cannot be evaluated")
    seen = check_pairs(report, split, pairs, progress)
    if split != "test":
        check_train_ids_in_label_ids(report, split, label_folder, seen)


def check_train_ids_in_label_ids(report: CheckReport, split: str, label_folder: Path,
                                 seen: dict[Path, list[int]]) -> None:
    """Train ids written under `*_gtFine_labelIds.png` without any ignore pixel pass the value check
    (0..18 are label ids too) but would train on the wrong classes: real label-id files always hold
    ids above 18 (vegetation 21, sky 23, car 26, ...), so a split whose checked label-id files hold
    none is refused."""
    label_ids = {path: values for path, values in seen.items() if cityscapes_label_rule(path) is CITYSCAPES_LABEL_IDS}
    if label_ids and all(max(values, default=0) <= 18 for values in label_ids.values()) and \
            any(max(values, default=0) > 0 for values in label_ids.values()):
        report.error(split, label_folder, f"no checked *{cityscapes.LABEL_ID_SUFFIX} holds an id above 18 (e.g. "
                                          f"{report.relative(next(iter(label_ids)))}): {CITYSCAPES_LABEL_IDS.swap_fix}")


def check_cityscapes(report: CheckReport, spec: DatasetSpec, splits: Sequence[str], progress: Progress | None) -> None:
    top = [report.root / cityscapes.IMAGE_DIR, report.root / cityscapes.LABEL_DIR]
    if not require_folders(report, "", top):
        report.counts.extend(SplitCount(split, 0, 0, spec.split_sizes.get(split)) for split in splits)
        return
    for split in splits:
        check_cityscapes_split(report, spec, split, progress)


def check_camvid_split(report: CheckReport, spec: DatasetSpec, split: str, progress: Progress | None) -> None:
    image_folder, label_folder = report.root / split, report.root / camvid.annot_dir(split)
    if not require_folders(report, split, (image_folder, label_folder)):
        report.counts.append(SplitCount(split, 0, 0, spec.split_sizes.get(split)))
        return
    images = {p.name: p for p in camvid.list_files(image_folder)}
    labels = {p.name: p for p in camvid.list_files(label_folder)}
    for name in sorted(images.keys() - labels.keys()):
        report.error(split, images[name], f"image has no label: expected {report.relative(label_folder / name)}")
    for name in sorted(labels.keys() - images.keys()):
        report.error(split, labels[name], f"label has no image: expected {report.relative(image_folder / name)}")
    check_count(report, spec, split, len(images), len(labels), image_folder)
    pairs = [(images[name], labels[name], CAMVID_LABELS) for name in sorted(images.keys() & labels.keys())]
    check_pairs(report, split, pairs, progress)


def check_camvid(report: CheckReport, spec: DatasetSpec, splits: Sequence[str], progress: Progress | None) -> None:
    for split in splits:
        check_camvid_split(report, spec, split, progress)


def check_folder_split(report: CheckReport, spec: DatasetSpec, split: str, progress: Progress | None) -> None:
    image_folder, label_folder = report.root / folder.IMAGE_DIR / split, report.root / folder.LABEL_DIR / split
    if not require_folders(report, split, (image_folder, label_folder)):
        report.counts.append(SplitCount(split, 0, 0, None))
        return
    layout = folder.layout_of(spec)
    images, labels = folder.list_pairs(report.root, split, layout)
    for stem in sorted(images.keys() - labels.keys()):
        report.error(split, images[stem], f"image has no mask: expected "
                                          f"{report.relative(label_folder / stem)}{layout.seg_suffix}")
    for stem in sorted(labels.keys() - images.keys()):
        report.error(split, labels[stem], f"mask has no image: expected {report.relative(image_folder / stem)}"
                                          f"{' or '.join(layout.image_suffixes())}")
    check_count(report, spec, split, len(images), len(labels), image_folder)
    rule = folder_label_rule(spec)
    check_pairs(report, split, [(images[s], labels[s], rule) for s in sorted(images.keys() & labels.keys())], progress)


def check_folder(report: CheckReport, spec: DatasetSpec, splits: Sequence[str], progress: Progress | None) -> None:
    top = [report.root / folder.IMAGE_DIR, report.root / folder.LABEL_DIR]
    if not require_folders(report, "", top):
        report.counts.extend(SplitCount(split, 0, 0, None) for split in splits)
        return
    names = folder.read_classes(report.root)
    source = f"{folder.CLASSES_FILE}" if names is not None else "--num-classes"
    report.add("info", "", "", f"{spec.num_classes} classes (from {source}), ignore index "
                               f"{folder.layout_of(spec).ignore_index}")
    for split in splits:
        check_folder_split(report, spec, split, progress)


Checker = Callable[[CheckReport, DatasetSpec, Sequence[str], "Progress | None"], None]
CHECKERS: dict[str, Checker] = {"synthetic": check_synthetic, "cityscapes": check_cityscapes, "camvid": check_camvid,
                                "folder": check_folder}

def require_root(spec: DatasetSpec, data_root: str | Path | None) -> Path:
    if data_root is None:
        raise DataError(f"{spec.name} needs --data-root DIR (or try `vss data synth --out DIR --format {spec.name}`)")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist: pass --data-root pointing at the {spec.name} folder")
    return root


def check_dataset(name: str | DatasetSpec, data_root: str | Path | None, splits: Sequence[str] = ("train", "val"),
                  progress: Progress | None = None, *, sample: int | None = None, **layout) -> CheckReport:
    """Check a dataset tree; a missing root raises DataError, every other fault becomes a Finding.
    With `sample`, pairing and folders are checked in full but only `sample` pairs per split are decoded.
    `layout`: a folder dataset's settings (num_classes, ignore_index, img_suffix, seg_suffix)."""
    spec = get_spec(name, data_root, **layout)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise ConfigError(f"--split {','.join(splits)} is not valid: choose from {', '.join(SPLITS)}")
    root = require_root(spec, data_root) if spec.needs_root else None
    report = CheckReport(spec.name, root, sample=sample)
    CHECKERS[spec.name](report, spec, list(splits), progress)
    return report


PREFLIGHT_SAMPLE = 8  # label files decoded per split before a train, finetune, eval or bench starts


def preflight(name: str | DatasetSpec, data_root: str | Path | None, splits: Sequence[str]) -> None:
    """The cheap part of `vss data check`, run before any work: folders, pairing, and label values,
    modes and sizes on `PREFLIGHT_SAMPLE` files per split. Raises DataError naming the first bad
    file (and a likely swap of label kinds); built-in datasets pass."""
    spec = get_spec(name)
    if not spec.needs_root:
        return
    report = check_dataset(name, data_root, splits, sample=PREFLIGHT_SAMPLE)
    errors = [f for f in report.findings if f.severity == "error"]
    if not errors:
        return
    first = errors[0]
    where = report.root / first.path if first.path else report.root
    more = f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    raise DataError(f"{where}: {first.problem}{more}; `vss data check --dataset {spec.name} --data-root "
                    f"{report.root}` lists every problem")
