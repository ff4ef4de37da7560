"""`vss bench` options: the grid's axes and the prune / fine-tune / eval templates its cells follow.

Torch-free (the CLI reads defaults from here). A cell's options are a template with the cell's method,
ratio, seed and paths replaced (`dataclasses.replace`), so a field added to `PruneOptions`,
`TrainOptions` or `EvalOptions` reaches every cell, and the grid's identity, with no plumbing here.
The whole `BenchOptions` is recorded in the bench run's config (`to_plain`) so `vss bench --join`
rebuilds it exactly (`from_plain`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from vss_cli.workflows.options import EvalOptions, PruneOptions, TrainOptions, from_plain, to_plain

DEFAULT_METHODS = ("fpgm", "sirfp")
DEFAULT_RATIOS = (0.2, 0.3, 0.5)
DEFAULT_SEEDS = (0,)
DEFAULT_FINETUNE_EPOCHS = 5
BENCH_BUDGET = "macs"  # every cell of a ratio column costs the same (vss prune counts channels)
# fields each cell sets itself, and fields that cannot change a cell's result (both left out of its identity)
PER_CELL = {
    "prune": ("ckpt", "method", "global_ratio", "seed", "save", "device"),
    "finetune": ("model_from", "seed", "save", "resume", "device", "num_workers", "tensorboard"),
    "eval": ("baseline", "candidate", "report", "out_dir", "device", "num_workers"),
}
TEMPLATES = {"prune": PruneOptions, "finetune": TrainOptions, "eval": EvalOptions}


@dataclass
class BenchOptions:
    """A grid and the recipe every cell follows (`None` fields: the dataset's / the step's default)."""

    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    ratios: list[float] = field(default_factory=lambda: list(DEFAULT_RATIOS))
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    prune: PruneOptions = field(default_factory=lambda: PruneOptions(budget=BENCH_BUDGET))
    finetune: TrainOptions = field(default_factory=lambda: TrainOptions(epochs=DEFAULT_FINETUNE_EPOCHS))
    eval: EvalOptions = field(default_factory=EvalOptions)
    method_options: dict[str, dict] = field(default_factory=dict)  # per method, over prune.method_options
    baseline: str | None = None  # checkpoint or run; None: reuse or train `baseline_train`
    baseline_train: TrainOptions = field(default_factory=TrainOptions)
    out_dir: str | None = None
    skip_existing: bool = False
    force_new: bool = False  # start a new grid in an --out-dir another grid's summary is in
    worker_grace: float = 300.0
    nproc_per_cell: int = 1  # > 1: each cell's fine-tune runs under torchrun on this many processes
    predict: int = 0  # > 0: each cell also draws this many baseline-vs-candidate panels (not part of its identity)

    @property
    def finetune_epochs(self) -> int:
        return self.finetune.epochs or 0

    @property
    def device(self) -> str:
        return self.eval.device

    def options_of(self, method: str) -> dict:
        """The method options a cell of `method` prunes with. Equal training budget: a method that trains
        itself (slimming's sparse phase, DMCP's search) runs at most the grid's fine-tuning epochs unless
        its option is given; those epochs are then taken off the cell's fine-tuning (`extra_epochs`)."""
        given = {**self.prune.method_options, **self.method_options.get(method, {})}
        from vss_cli.pruning.registry import method_class

        cls = method_class(method)
        key = cls.training_epochs_option
        if key is None or key in given:
            return given
        return {**given, key: min(int(cls.option_default(key)), max(self.finetune_epochs, cls.training_epochs_min))}

    def cell_prune(self, method: str, ratio: float, seed: int, *, ckpt: str = "", save: str | None = None) -> PruneOptions:
        return replace(self.prune, ckpt=ckpt, method=method, global_ratio=ratio, seed=seed, save=save,
                       method_options=self.options_of(method))

    def cell_finetune(self, seed: int, *, model_from: str, save: str, resume: bool) -> TrainOptions:
        return replace(self.finetune, seed=seed, model_from=model_from, save=save, resume=resume)

    def cell_eval(self, *, baseline: str, candidate: str, out_dir: str | None) -> EvalOptions:
        return replace(self.eval, baseline=baseline, candidate=candidate, out_dir=out_dir)

    def with_device(self, device: str) -> BenchOptions:
        """The same grid run on another device (a worker pinned to one GPU)."""
        return replace(self, prune=replace(self.prune, device=device), eval=replace(self.eval, device=device),
                       finetune=replace(self.finetune, device=device),
                       baseline_train=replace(self.baseline_train, device=device))

    def settings(self, device_type: str) -> dict[str, Any]:
        """Everything besides the baseline and the axes that changes a cell's result."""
        out = {step: _result_fields(getattr(self, step), step) for step in TEMPLATES}
        out["eval"]["device"] = device_type
        out["finetune"]["nproc_per_cell"] = self.nproc_per_cell  # DDP multiplies the global batch
        out["method_options"] = self.method_options
        return out

    def cell_settings(self, settings: dict[str, Any], method: str) -> dict[str, Any]:
        """A cell's share of the settings: its method's options folded into the prune settings."""
        prune = {**settings["prune"], "method_options": self.options_of(method)}
        return {**{k: v for k, v in settings.items() if k != "method_options"}, "prune": prune}

    def to_plain(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in (*TEMPLATES, "baseline_train"):
            out[name] = to_plain(out[name])
        return out

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> BenchOptions:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for name, kind in (*TEMPLATES.items(), ("baseline_train", TrainOptions)):
            if name in kwargs:
                kwargs[name] = from_plain(kind, kwargs[name])
        return cls(**kwargs)


def _result_fields(opts: Any, step: str) -> dict[str, Any]:
    plain = to_plain(opts)
    return {k: v for k, v in plain.items() if k not in PER_CELL[step]}
