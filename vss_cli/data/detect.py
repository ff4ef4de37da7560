"""Which dataset format a tree holds, told from its top-level folders (near-miss names count too):
`--data-root` without `--dataset`, for `vss data check` and every command that reads a dataset."""

from __future__ import annotations

import difflib
from pathlib import Path

from vss_cli.data import camvid, cityscapes, folder
from vss_cli.data.specs import SPLITS
from vss_cli.errors import DataError

# top-level folders that identify a format when --dataset is not given
LAYOUT_MARKERS: dict[str, tuple[str, ...]] = {
    "cityscapes": (cityscapes.IMAGE_DIR, cityscapes.LABEL_DIR),
    "camvid": tuple(camvid.annot_dir(split) for split in SPLITS),
    "folder": (folder.IMAGE_DIR, folder.LABEL_DIR),
}


def infer_dataset(data_root: str | Path) -> str:
    """Guess the format of a tree from its top-level folders (near-miss names count too); a root one
    folder off (the folder above the tree, or one inside it) is named in the error as the fix."""
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist: pass --data-root pointing at an existing folder")
    found = layout_of(root)
    if found is not None:
        return found
    nearby = [p for p in (*sorted(q for q in root.iterdir() if q.is_dir()), root.parent)
              if layout_of(p, exact=True) is not None]
    if nearby:
        fix = nearby[0]
        raise DataError(f"{root} is one folder off a {layout_of(fix, exact=True)} tree: pass --data-root {fix}")
    raise DataError(f"cannot tell the format of {root}: expected leftImg8bit/ and gtFine/ (cityscapes), "
                    "train/ and trainannot/ (camvid) or img_dir/ and ann_dir/ (folder); pass --dataset, or "
                    "point --data-root at the folder that holds them")


def layout_of(root: Path, *, exact: bool = False) -> str | None:
    """The format whose top-level folders `root` holds (near-miss names too unless `exact`)."""
    names = [p.name for p in root.iterdir() if p.is_dir()]
    for exact_pass in (True,) if exact else (True, False):
        for dataset, markers in LAYOUT_MARKERS.items():
            if any(_matches(marker, names, exact_pass) for marker in markers):
                return dataset
    return None


def _matches(marker: str, names: list[str], exact: bool) -> bool:
    return marker in names if exact else bool(difflib.get_close_matches(marker, names, n=1, cutoff=0.8))
