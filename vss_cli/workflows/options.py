"""The options of the prune, train and eval workflows: one definition of every option and its default.

Torch-free, so the CLI reads its defaults from these fields (`default_of`) without importing torch.
Each workflow module validates its own options (`prune.validate`, `train.validate`,
`evaluate.validate`); `vss bench` composes them as templates (`workflows.bench_options`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PruneOptions:
    ckpt: str = ""  # checkpoint path or run id (required by `prune_run`)
    method: str = "l1"
    global_ratio: float = 0.3
    round_to: int | str = 8  # "auto" with --budget latency: the widths the latency table shows are fast
    allocation: str = "paper"  # how the cut is spread over layers (planner.USER_ALLOCATIONS)
    normalizer: str = "mean"  # score normalisation of the global allocation (planner.NORMALIZERS)
    budget: str = "channels"  # what --global-ratio counts (budget registry: channels, macs, latency)
    input_size: tuple[int, int] | None = None
    samples: int = 64
    seed: int = 0
    device: str = "auto"
    dataset: str | None = None
    data_root: str | None = None
    method_options: dict = field(default_factory=dict)
    batch_size: int = 8
    save: str | None = None
    model: str | None = None  # optional check: the checkpoint must hold this model
    speed_check_iters: int = 20  # paired iterations timing the pruned model against its parent (0 = off)
    dtype: str = "fp32"  # timing precision of that check
    require_speedup: bool = False  # a pruned model not faster than its parent fails the run (exit 1)


@dataclass
class TrainOptions:
    """A training recipe; `None` fields take the dataset's defaults (DESIGN §1)."""

    dataset: str | None = None  # None: the parent checkpoint's dataset, else synthetic
    data_root: str | None = None
    dataset_options: dict = field(default_factory=dict)  # folder: num_classes, ignore_index, img/seg_suffix
    model: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-4
    scheduler: str = "poly"
    warmup_epochs: float = 0.0
    slimming_lambda: float = 0.0
    input_size: tuple[int, int] | None = None
    amp: str | None = None
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    class_weights: bool = False
    sync_bn: bool = False
    max_iters_per_epoch: int | None = None
    model_from: str | None = None  # finetune: a pruned checkpoint or run
    save: str | None = None
    resume: bool = False
    tensorboard: str | None = None  # also write the per-epoch scalars as event files under DIR/<kind>-<run id>


@dataclass
class EvalOptions:
    baseline: str = ""  # checkpoint path or run id (required by `eval_run`)
    candidate: str = ""
    report: str | None = None  # default: <out_dir>/evaluation_report.json
    batch_size: int = 4
    input_size: tuple[int, int] | None = None  # default: the dataset's
    dataset: str | None = None  # default: the candidate checkpoint's dataset
    data_root: str | None = None
    device: str = "auto"
    dtype: str = "fp32"  # speed measurement only
    channels_last: bool = False
    fuse_bn: bool = True  # time the conv-BN folded model (accuracy always uses the model as stored)
    compile: bool = False  # time the torch.compile'd model
    cuda_graphs: bool = False  # time CUDA-graph replays (CUDA only)
    speed_iters: int = 50
    warmup: int = 10
    oracle_samples: int = 0  # 0 = no oracle analysis
    oracle_layers: int = 4
    oracle_methods: str = "candidate"  # candidate | all
    reconstruction_batches: int = 4
    split: str = "val"
    num_workers: int = 0
    out_dir: str | None = None  # default: runs/eval/<run id>
    model: str | None = None  # optional check: both checkpoints must hold this model


@dataclass
class ExportOptions:
    run: str  # run id or checkpoint path
    format: str = "onnx"  # onnx | torchscript
    out: str | None = None  # default: runs/export/<run id>/model.<ext>
    input_size: tuple[int, int] | None = None  # default: the checkpoint dataset's
    fuse_bn: bool = True


def default_of(cls: type, name: str) -> Any:
    """The default of field `name` of options dataclass `cls` (what the CLI shows and uses)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__} has no field {name} with a default")


def to_plain(opts: Any) -> dict[str, Any]:
    """Options as JSON-ready values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(opts).items()}


def from_plain(cls: type, data: dict[str, Any]) -> Any:
    """Options rebuilt from `to_plain` output; fields the class no longer has are dropped."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    if kwargs.get("input_size") is not None:
        kwargs["input_size"] = tuple(kwargs["input_size"])
    return cls(**kwargs)
