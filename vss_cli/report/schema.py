"""The one definition of what an evaluation reports and what a grid cell carries (no torch).

`EvalReport` is `vss eval`'s report: its fields are the JSON keys (the seed's names, DESIGN §6; the
entries of `speedups` sit at the top level, so a ratio the speed engine adds appears with no change
here). `FLAT_SIDE_METRICS` and `EvalReport.flat_metrics` give the flat metric rows stored on the eval
run. `CELL_METRICS` lists what a bench cell copies from its eval run: the cell's metric rows, the keys
of `benchmark_summary.json` rows, the `vss bench` / `vss report` columns and the CSV header all come
from it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SIDES = ("baseline", "candidate")
# flat metric `<side>_<name>` <- (section of the side's report, key in it)
FLAT_SIDE_METRICS = {
    "miou": ("results", "mIoU"),
    "pixel_accuracy": ("results", "Pixel_Accuracy"),
    "mean_accuracy": ("results", "Mean_Accuracy"),
    "fw_iou": ("results", "Frequency_Weighted_IoU"),
    "latency_ms": ("speed", "median_ms"),
    "latency_min_ms": ("speed", "min_ms"),
    "latency_max_ms": ("speed", "max_ms"),
    "fps": ("speed", "fps"),
    "macs": ("flops_params", "macs"),
    "params": ("flops_params", "params"),
}
SPREAD_FIELDS = ("speedups",)  # dict fields whose entries are top-level JSON keys


@dataclass
class PruningRatios:
    """Prunable conv output channels of the baseline and the candidate."""

    channel_prune_ratio: float
    channels_before: int
    channels_after: int

    @property
    def channels_removed(self) -> int:
        return self.channels_before - self.channels_after


@dataclass
class EvalReport:
    """A candidate against its baseline; the field order is the JSON key order."""

    baseline: str
    candidate: str
    dataset: str
    split: str
    input_size: list[int]
    baseline_results: dict[str, Any]
    candidate_results: dict[str, Any]
    miou_retention: float
    pixel_accuracy_retention: float
    baseline_speed: dict[str, Any]
    candidate_speed: dict[str, Any]
    speedups: dict[str, float]  # speedup_latency, speedup_fps, speedup_of_medians, ... (top-level keys)
    baseline_flops_params: dict[str, Any]
    candidate_flops_params: dict[str, Any]
    pruning_ratios: PruningRatios
    oracle_analysis: dict[str, Any] | None = None
    reconstruction_mse: float | None = None
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The report file's content."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SPREAD_FIELDS:
                out.update(value)
            else:
                out[f.name] = asdict(value) if isinstance(value, PruningRatios) else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalReport:
        names = {f.name for f in fields(cls)}
        given = {k: v for k, v in data.items() if k in names and k not in SPREAD_FIELDS}
        given["pruning_ratios"] = PruningRatios(**data["pruning_ratios"])
        return cls(**given, speedups={k: v for k, v in data.items() if k not in names})

    def side(self, side: str, section: str) -> dict[str, Any]:
        """`side('candidate', 'speed')` is `candidate_speed`."""
        return getattr(self, f"{side}_{section}")

    @property
    def speedup_latency(self) -> float:
        return self.speedups["speedup_latency"]

    @property
    def speed_noise_known(self) -> bool:
        """Whether the timing engine said anything about the spread of the timings."""
        return "speedup_noisy" in self.speedups or any("noisy" in self.side(s, "speed") for s in SIDES)

    @property
    def speed_noisy(self) -> bool:
        """The speedup is not to be trusted: the timings spread widely (as the speed engine judged)."""
        return bool(self.speedups.get("speedup_noisy")) or any(self.side(s, "speed").get("noisy") for s in SIDES)

    def flat_metrics(self) -> dict[str, float]:
        """The report's numbers as flat metric keys for the store (`candidate_miou`, `speedup_latency`, ...)."""
        rows: dict[str, Any] = {}
        for side in SIDES:
            rows.update({f"{side}_{name}": self.side(side, section).get(key)
                         for name, (section, key) in FLAT_SIDE_METRICS.items()})
        base, cand = self.baseline_flops_params, self.candidate_flops_params
        rows.update({
            "miou_retention": self.miou_retention,
            "pixel_accuracy_retention": self.pixel_accuracy_retention,
            **{k: v for k, v in self.speedups.items() if isinstance(v, (int, float))},
            "macs_reduction": 1.0 - ratio(cand["macs"], base["macs"]),
            "params_reduction": 1.0 - ratio(cand["params"], base["params"]),
            **asdict(self.pruning_ratios),
            "reconstruction_mse": self.reconstruction_mse,
        })
        if self.speed_noise_known:
            rows["speedup_noisy"] = float(self.speed_noisy)
        rows.update(_oracle_metrics(self.oracle_analysis))
        return {k: float(v) for k, v in rows.items() if v is not None}


def _oracle_metrics(oracle: dict[str, Any] | None) -> dict[str, Any]:
    if not oracle:
        return {}
    rows = {"oracle_seconds": oracle.get("oracle_seconds", oracle["seconds"]), "oracle_total_seconds": oracle["seconds"],
            "oracle_forward_passes": oracle["forward_passes"], "oracle_base_loss": oracle["base_loss"]}
    for name, m in oracle["methods"].items():
        rows.update({f"oracle_{name}_{k}": m[k] for k in ("spearman", "kendall", "overlap")})
    return rows


def ratio(new: float, old: float) -> float:
    """new / old, NaN when either is not a finite number or old is 0."""
    return new / old if old and math.isfinite(old) and math.isfinite(new) else float("nan")


@dataclass(frozen=True)
class CellMetric:
    """A number a bench cell copies from one of its steps' flat metrics (its eval run's by default)."""

    name: str  # the cell's metric key and the summary row key
    source: str  # the step run's flat metric
    label: str | None = None  # its column in `vss report` (mean ± std over seeds); None: summary only
    spec: str = ".4f"  # how people see it
    step: str = "eval"  # which run it comes from: eval, prune, or the cell itself


CELL_METRICS: tuple[CellMetric, ...] = (
    CellMetric("miou", "candidate_miou", "mIoU", ".4f"),
    CellMetric("miou_retention", "miou_retention", "retention", ".3f"),
    CellMetric("macs_reduction", "macs_reduction", "MACs ↓", ".1%"),
    CellMetric("params_reduction", "params_reduction", "params ↓", ".1%"),
    CellMetric("channel_reduction", "channel_prune_ratio", "channels ↓", ".1%"),
    CellMetric("speedup_latency", "speedup_latency", "speedup", ".2f"),
    # absolute times are measured at different moments under different load: summary only, never a column
    CellMetric("candidate_latency_ms", "candidate_latency_ms", spec=".2f"),
    CellMetric("baseline_miou", "baseline_miou"),
    CellMetric("baseline_latency_ms", "baseline_latency_ms", spec=".2f"),
    CellMetric("baseline_macs", "baseline_macs", spec=".0f"),
    CellMetric("candidate_macs", "candidate_macs", spec=".0f"),
    CellMetric("baseline_params", "baseline_params", spec=".0f"),
    CellMetric("candidate_params", "candidate_params", spec=".0f"),
    CellMetric("speedup_noisy", "speedup_noisy", spec=".0f"),  # 1: the timings spread widely
    CellMetric("slower_than_parent", "slower_than_parent", spec=".0f", step="prune"),  # 1: no faster than its parent
    CellMetric("extra_epochs", "extra_epochs", spec=".0f", step="prune"),  # epochs the method trained itself
    CellMetric("finetune_epochs", "finetune_epochs", spec=".0f", step="cell"),  # the grid's, less extra_epochs
)


def cell_metrics(eval_metrics: dict[str, float]) -> dict[str, float | None]:
    """A cell's metric rows from its eval run's flat metrics."""
    return {m.name: eval_metrics.get(m.source) for m in CELL_METRICS}


def aggregated() -> tuple[CellMetric, ...]:
    """The cell metrics `vss report` averages over seeds, in column order."""
    return tuple(m for m in CELL_METRICS if m.label)


@dataclass
class CellRow:
    """One grid cell as the summary file lists it (keys follow the seed's `benchmark_summary.json`)."""

    method: str
    ratio: float
    seed: int
    status: str
    metrics: dict[str, float | None] = field(default_factory=dict)  # CELL_METRICS by name
    cell_run: str = ""
    prune_run: str | None = None
    finetune_run: str | None = None
    eval_run: str | None = None
    config_key: str = ""
    error: str | None = None
    skipped: bool = False

    def metric(self, name: str) -> float | None:
        return self.metrics.get(name)

    @property
    def speed_noisy(self) -> bool:
        return bool(self.metrics.get("speedup_noisy"))

    @property
    def slower_than_parent(self) -> bool:
        """The pruned model was not faster than its parent in prune's paired check (DESIGN §5)."""
        return bool(self.metrics.get("slower_than_parent"))

    def to_dict(self) -> dict[str, Any]:
        """The summary row: axes and status, every cell metric (in CELL_METRICS order), then run ids."""
        out = asdict(self)
        out.pop("metrics")
        head = {k: out.pop(k) for k in ("method", "ratio", "seed", "status")}
        return {**head, **{m.name: self.metrics.get(m.name) for m in CELL_METRICS}, **out}
