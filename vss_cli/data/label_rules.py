"""What a label file may hold, per dataset format: the valid values, how to name them in a finding,
and the values of the label kind a file is often swapped with (Cityscapes label ids vs train ids),
with the fix to print when a file holds exactly those. `vss data check` applies them (`checks`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vss_cli.data import camvid, cityscapes, folder
from vss_cli.data.specs import DatasetSpec


@dataclass(frozen=True)
class LabelRule:
    """Which values a label file may hold, and how to say so; `swapped_values` are those of the file
    kind it is often confused with, and `swap_fix` says what to do when a file holds exactly those."""

    valid: frozenset[int]
    description: str
    swapped_values: frozenset[int] = frozenset()
    swap_fix: str = ""

    def problem(self, bad: list[int], values: list[int]) -> str:
        """The finding for a label whose `values` include `bad` ones (naming a likely swap)."""
        text = f"label values {format_values(bad)} are outside the valid set ({self.description})"
        if self.swap_fix and set(values) <= self.swapped_values:
            text += f": {self.swap_fix}"
        return text


CITYSCAPES_LABEL_IDS = LabelRule(
    cityscapes.VALID_LABEL_IDS, "Cityscapes label ids -1..33", cityscapes.VALID_TRAIN_IDS,
    f"the file looks like it holds train ids (0..18, 255), not label ids: name it "
    f"*{cityscapes.TRAIN_ID_SUFFIX}, or regenerate it with cityscapesScripts' createTrainIdLabelImgs")
CITYSCAPES_TRAIN_IDS = LabelRule(
    cityscapes.VALID_TRAIN_IDS, "Cityscapes train ids 0..18 and 255",
    frozenset(v % 256 for v in cityscapes.VALID_LABEL_IDS),
    f"the file looks like it holds raw label ids (0..33), not train ids: name it *{cityscapes.LABEL_ID_SUFFIX} "
    "(vss maps label ids to train ids itself)")
CAMVID_LABELS = LabelRule(camvid.VALID_LABELS, "CamVid labels 0..11 (11 = void)")


def format_values(values: Sequence[int], limit: int = 12) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


def cityscapes_label_rule(label: Path) -> LabelRule:
    return CITYSCAPES_TRAIN_IDS if label.name.endswith(cityscapes.TRAIN_ID_SUFFIX) else CITYSCAPES_LABEL_IDS


def folder_label_rule(spec: DatasetSpec) -> LabelRule:
    layout = folder.layout_of(spec)
    valid = frozenset(range(spec.num_classes)) | {layout.ignore_index}
    return LabelRule(valid, f"class ids 0..{spec.num_classes - 1} of the {spec.num_classes} classes, and ignore "
                            f"{layout.ignore_index}")
