"""Per-class damage of a bench: each class's IoU for the baseline and for every method × ratio (mean
over seeds) and the drop, worst classes first. Read from the cells' eval report artifacts (their
`baseline_results` / `candidate_results` per-class IoU) through store queries; no torch.

A class whose IoU is undefined in a report (absent from both ground truth and prediction) is left
out of that mean, as in mIoU; `n` says how many seeds a mean has.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vss_cli.errors import ConfigError
from vss_cli.report.tables import CellRow
from vss_cli.store import Store


@dataclass
class ClassDamage:
    """One method × ratio × class row."""

    method: str
    ratio: float
    class_name: str
    baseline_iou: float | None
    iou_mean: float | None
    iou_std: float | None
    drop: float | None  # baseline IoU − candidate IoU (positive = the class lost accuracy)
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def eval_report(store: Store, eval_run_id: str) -> dict | None:
    """The eval run's JSON report (its newest `report` artifact), or None when it has none on disk."""
    artifacts = store.artifacts(eval_run_id, "report")
    if not artifacts or not Path(artifacts[-1].path).is_file():
        return None
    return json.loads(Path(artifacts[-1].path).read_text())


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _per_class(report: dict, side: str) -> dict[str, float | None]:
    return dict(report[f"{side}_results"]["per_class_iou"])


def _collect(store: Store, rows: Sequence[CellRow]) -> tuple[list[str], dict[str, list], dict[tuple, list[dict]]]:
    """Class names, baseline IoUs per class (one per report) and candidate per-class dicts per method × ratio."""
    names: list[str] = []
    baseline: dict[str, list[float]] = {}
    candidates: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        if row.status != "completed" or row.eval_run is None:
            continue
        report = eval_report(store, row.eval_run)
        if report is None:
            continue
        for name, iou in _per_class(report, "baseline").items():
            if name not in names:
                names.append(name)
            if iou is not None:
                baseline.setdefault(name, []).append(float(iou))
        candidates.setdefault((row.method, row.ratio), []).append(_per_class(report, "candidate"))
    return names, baseline, candidates


def class_damage(store: Store, rows: Sequence[CellRow]) -> list[ClassDamage]:
    """Rows in grid order of method × ratio, and within each, classes by drop (largest first)."""
    names, baseline, candidates = _collect(store, rows)
    if not candidates:
        raise ConfigError("no completed cell of this bench has an eval report on disk: "
                          "run or finish the bench (`vss bench ...`) before asking --per-class")
    base_iou = {name: _mean(baseline.get(name, [])) for name in names}
    out = []
    for (method, ratio), reports in candidates.items():
        group = []
        for name in names:
            values = [float(r[name]) for r in reports if r.get(name) is not None]
            mean = _mean(values)
            std = statistics.stdev(values) if len(values) > 1 else None
            drop = base_iou[name] - mean if mean is not None and base_iou[name] is not None else None
            group.append(ClassDamage(method, ratio, name, base_iou[name], mean, std, drop, len(values)))
        out += sorted(group, key=lambda d: (d.drop is None, -(d.drop or 0.0)))
    return out


def display_rows(damage: Sequence[ClassDamage]) -> list[dict[str, str]]:
    """The rows as text for the table and markdown formats."""
    def fmt(value: float | None, spec: str = ".4f") -> str:
        return "—" if value is None else format(value, spec)

    return [{"method": d.method, "ratio": f"{d.ratio:g}", "class": d.class_name, "baseline IoU": fmt(d.baseline_iou),
             "IoU": fmt(d.iou_mean) + (f" ± {d.iou_std:.4f}" if d.iou_std is not None else ""),
             "drop": fmt(d.drop, "+.4f"), "n": str(d.n)} for d in damage]


@dataclass
class HeatMap:
    """Drops as a matrix: one row per method × ratio (grid order), one column per class (worst first)."""

    rows: list[str]
    classes: list[str]
    drops: list[list[float | None]]


def heat_map(damage: Sequence[ClassDamage]) -> HeatMap:
    """Columns are ordered by the class's mean drop over all rows, largest first."""
    labels: list[str] = []
    cells: dict[tuple[str, str], float | None] = {}
    for d in damage:
        label = f"{d.method} {d.ratio:g}"
        if label not in labels:
            labels.append(label)
        cells[(label, d.class_name)] = d.drop
    classes = list(dict.fromkeys(d.class_name for d in damage))
    mean_drop = {c: _mean([v for r in labels if (v := cells.get((r, c))) is not None]) for c in classes}
    classes.sort(key=lambda c: -(mean_drop[c] if mean_drop[c] is not None else float("-inf")))
    return HeatMap(labels, classes, [[cells.get((r, c)) for c in classes] for r in labels])
