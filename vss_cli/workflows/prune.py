"""`vss prune`: score channels with a method, remove them physically, record the lineage."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vss_cli.data.checks import preflight
from vss_cli.engine.checkpoint import read_checkpoint, save_checkpoint
from vss_cli.engine.progress import log
from vss_cli.errors import ConfigError
from vss_cli.fileio import write_json
from vss_cli.pruning.base import PruneContext, PruningMethod
from vss_cli.pruning.budget import Budget, get_budget
from vss_cli.pruning.checkpoint import load_checkpoint
from vss_cli.pruning.planner import plan_channels
from vss_cli.pruning.registry import get_method
from vss_cli.pruning.surgery import (
    apply_plan,
    build_graph,
    collect_groups,
    inference_convs,
    layer_widths,
    output_layers_of,
    prunable_channels,
    split_inference_groups,
)
from vss_cli.store.queue import RunStore
from vss_cli.workflows.common import (
    check_model_name,
    default_out_dir,
    recorded,
    resolve_device,
    save_artifact,
    versions,
)
from vss_cli.workflows.options import PruneOptions
from vss_cli.workflows.paths import choose_input_size, recorded_input_size, resolve_checkpoint
from vss_cli.workflows.prechecks import check_folder_option, check_input_size

__all__ = ["PruneOptions", "PruneOutcome", "PruneReport", "prune_run", "validate"]


@dataclass
class PruneReport:
    """What a prune run did; every field also lands as a metric row."""

    method: str
    requested_ratio: float
    channel_prune_ratio: float  # share of inference-graph prunable channels removed
    macs_reduction: float  # share of inference MACs removed (ptflops)
    channels_before: int
    channels_after: int
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    score_seconds: float
    prune_seconds: float
    extra_epochs: float = 0.0  # epochs the method trained itself (slimming's sparse phase, DMCP's search)
    notes: dict = field(default_factory=dict)

    @property
    def achieved_ratio(self) -> float:
        return self.channel_prune_ratio

    def scalars(self) -> dict[str, float]:
        d = asdict(self)
        d.pop("method")
        d.pop("notes")
        return {k: float(v) for k, v in d.items()}


@dataclass
class PruneOutcome:
    run_id: str
    out_dir: Path
    checkpoint: Path
    report: PruneReport


def validate(opts: PruneOptions) -> None:
    """Every check that needs no checkpoint: ranges, the method and its options (bench checks each cell)."""
    from vss_cli.pruning.budget import list_budgets
    from vss_cli.pruning.planner import NORMALIZERS, USER_ALLOCATIONS

    choices = (("--allocation", opts.allocation, USER_ALLOCATIONS), ("--normalizer", opts.normalizer, NORMALIZERS),
               ("--budget", opts.budget, list_budgets()))
    for flag, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"unknown {flag} '{value}': choose from {', '.join(allowed)}")
    if not 0.0 < opts.global_ratio < 1.0:
        raise ConfigError(f"--global-ratio {opts.global_ratio} is outside (0, 1): pass a fraction such as 0.3")
    if opts.round_to == "auto" and opts.budget != "latency":
        raise ConfigError("--round-to auto reads the latency table: pass --budget latency or a number")
    if opts.round_to != "auto" and (not isinstance(opts.round_to, int) or opts.round_to < 1):
        raise ConfigError(f"--round-to {opts.round_to} must be 1 or more (or auto with --budget latency)")
    if opts.samples < 0:
        raise ConfigError(f"--samples {opts.samples} must be 0 or more")
    if opts.batch_size < 1:
        raise ConfigError(f"--batch-size {opts.batch_size} must be at least 1")
    method = get_method(opts.method, **opts.method_options)  # unknown methods and options fail here
    if method.needs_data and opts.samples == 0:
        raise ConfigError(f"method '{method.name}' scores channels on data: pass --samples N with N > 0")
    if opts.speed_check_iters < 0:
        raise ConfigError(f"--speed-check-iters {opts.speed_check_iters} must be 0 (off) or more")
    if opts.require_speedup and not opts.speed_check_iters:
        raise ConfigError("--require-speedup needs the parent timing: pass --speed-check-iters N with N > 0")


def sample_source(dataset, data_root: str | None, input_size, samples: int, batch_size: int, seed: int):
    """Minibatches of the first `samples` training images after a seeded shuffle, without augmentation."""
    from vss_cli.data import build_dataset

    ds = build_dataset(dataset, "train", data_root=data_root, input_size=input_size, train=False, seed=seed)
    n = min(samples, len(ds))
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()

    def batches():
        for start in range(0, n, batch_size):
            items = [ds[i] for i in order[start:start + batch_size]]
            yield torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    return batches


def make_fit(dataset, data_root: str | None, input_size, seed: int, device):
    """The `ctx.fit` given to methods: `engine.fit` on the training split with the dataset's recipe."""

    def run_fit(model, hooks, epochs: int, lr: float | None = None, optimizer=None, max_iters: int | None = None):
        from vss_cli.data import build_dataset, build_loader, get_spec
        from vss_cli.engine.train import TrainConfig, fit

        spec = get_spec(dataset, data_root)
        train = build_loader(build_dataset(spec, "train", data_root=data_root, input_size=input_size, train=True,
                                           seed=seed), batch_size=spec.default_batch_size, train=True, seed=seed)
        cfg = TrainConfig(epochs=epochs, lr=lr or spec.default_lr, seed=seed, device=str(device),
                          max_iters_per_epoch=max_iters)
        return fit(model, train, None, cfg, num_classes=spec.num_classes, ignore_index=spec.ignore_index,
                   hooks=hooks, optimizer=optimizer)

    return run_fit


def prune_run(opts: PruneOptions, store: RunStore) -> PruneOutcome:
    """Prune a checkpoint with one method at a global ratio; returns the new run and checkpoint."""
    from vss_cli.data import recorded_spec
    from vss_cli.engine.complexity import count_complexity
    from vss_cli.engine.speed import check_dtype
    from vss_cli.store import config_key, file_sha256

    validate(opts)
    check_folder_option(opts.save, "--save", "<save>/<run id>/pruned.pt")
    method = get_method(opts.method, **opts.method_options)
    device = resolve_device(opts.device)
    check_dtype(opts.dtype, device)
    ref = resolve_checkpoint(store, opts.ckpt)
    ds = read_checkpoint(ref.path).get("dataset", {})
    dataset = opts.dataset or ds.get("name") or "synthetic"
    data_root = opts.data_root or ds.get("data_root")
    dspec = recorded_spec(dataset, data_root, ds)
    input_size = choose_input_size(opts.input_size, recorded_input_size(ds, ref.run), dspec.default_input_size,
                                   recorded_from=str(ref.path))
    if method.needs_data and dspec.needs_root and not data_root:
        raise ConfigError(f"method '{method.name}' needs {dataset} images: pass --data-root DIR")
    if opts.samples > 0 and data_root:
        preflight(dspec, data_root, ("train",))  # scored images: their labels are checked before any row
    loaded = load_checkpoint(ref.path, device)
    check_model_name(opts.model, loaded.spec.name, ref.path)
    check_input_size(loaded.model, input_size, device)
    checked = check_reachable(loaded.model, loaded.spec.name, opts, input_size, device,
                              [(method, opts.global_ratio, "")])
    config = {**asdict(opts), "ckpt": None, "save": None, "model": loaded.spec.name, "device": None, "dataset": dataset,
              "data_root": data_root, "input_size": list(input_size), "kind": "prune"}
    key = config_key(config, [file_sha256(ref.path)])
    parents = [(ref.run_id, "pruned-from")] if ref.run_id else []
    run = store.create_run(kind="prune", config=config, parents=parents, config_key=key,
                           versions=versions(device), status="running")
    out_dir = default_out_dir("prune", run.id, Path(opts.save) if opts.save else None)
    store.update_run(run.id, out_dir=str(out_dir.resolve()))
    with recorded(store, run.id):
        model = loaded.model
        parent = copy.deepcopy(model) if opts.speed_check_iters else None
        budget, latency = (checked, None) if checked is not None else budget_for(store, opts, input_size, device)
        report, history = prune_model(
            model, loaded.spec.name, method, opts, input_size=input_size, device=device,
            batch_source=sample_source(dspec, data_root, input_size, opts.samples, opts.batch_size, opts.seed)
            if opts.samples > 0 else None,
            fit=make_fit(dspec, data_root, input_size, opts.seed, device),
            num_classes=loaded.spec.num_classes, ignore_index=dspec.ignore_index,
            count=lambda m: count_complexity(m, input_size), old_history=loaded.history,
            parent_config=dict(getattr(ref.run, "config", None) or {}), budget=budget,
        )
        if latency is not None:
            store.add_metrics(run.id, latency.metrics())
        if parent is not None:
            store.add_metrics(run.id, check_parent_speed(parent, model, opts, input_size, device))
        dataset_record = {**dspec.to_dict(), "data_root": data_root, "input_size": list(input_size)}
        ckpt = _save_pruned(store, run.id, out_dir, model, loaded.spec, history, dataset_record, opts, report)
    return PruneOutcome(run_id=run.id, out_dir=out_dir, checkpoint=ckpt, report=report)


def _save_pruned(store: RunStore, run_id: str, out_dir: Path, model, spec, history, dataset_record: dict,
                 opts: PruneOptions, report) -> Path:
    """The pruned checkpoint, the per-layer widths and the report's scalars, recorded on the run."""
    ckpt = save_artifact(store, run_id, "checkpoint", out_dir / "pruned.pt", lambda p: save_checkpoint(
        p, model=model, spec=spec, history=history, dataset=dataset_record,
        extra={"method": opts.method, "global_ratio": opts.global_ratio}))
    save_artifact(store, run_id, "widths", out_dir / "widths.json",
                  lambda p: write_json(p, {"widths": layer_widths(model), "notes": report.notes}))
    store.add_metrics(run_id, report.scalars())
    return ckpt


def check_reachable(model, model_name: str, opts: PruneOptions, input_size, device,
                    cells: Sequence[tuple[PruningMethod, float, str]]) -> Budget | None:
    """Refuse an unreachable --global-ratio before any run row exists; `cells` are (method, ratio, where
    the error comes from). An allocation that follows the budget narrows every layer to its floor (the
    per-layer cap) at the end of its knob, whatever the (positive) scores, so planning on uniform scores
    raises the out-of-reach error the real plan would. Skipped (None) where the widths come only from
    running the method (`searched`) or from measuring (a budget with its own `fit`, latency); else
    returns the budget with its cost measured, for the prune to plan with (the cost depends on the
    network's structure and input size only)."""
    from vss_cli.pruning.planner import plan_channels, rule_for

    cells = [c for c in cells if rule_for(opts.allocation, c[0]) != "searched"]
    budget = get_budget(opts.budget)
    if not cells or type(budget).fit is not Budget.fit:
        return None
    model.to(device).eval()
    _, groups, ctx, _ = prune_context(model, output_layers_of(model, model_name), opts, input_size=input_size,
                                      device=device, batch_source=None, fit=None, num_classes=0, ignore_index=255)
    cost = budget.cost(ctx)  # measured once (the MACs model: two forward passes), shared by every cell
    budget.cost = lambda _ctx: cost
    uniform = {g.name: torch.ones(g.size) for g in groups}
    for method, ratio, where in cells:
        ctx.ratio = ratio
        try:
            plan_channels(method, ctx, uniform, budget)
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None
    return budget


def budget_for(store, opts: PruneOptions, input_size, device) -> tuple:
    """(budget, latency outcome): `--budget latency` gets its measuring planner (and an outcome to
    record), every other budget is the registry's as it is (outcome None)."""
    if opts.budget != "latency":
        return get_budget(opts.budget), None
    from vss_cli.workflows.latency_budget import LatencySetting, latency_planner

    planner, outcome = latency_planner(store, LatencySetting(
        ratio=opts.global_ratio, round_to=opts.round_to, device=device, dtype=opts.dtype, batch=opts.batch_size,
        input_size=tuple(input_size), iters=max(opts.speed_check_iters, 10)))
    return get_budget("latency", planner=planner), outcome


def check_parent_speed(parent, model, opts: PruneOptions, input_size, device) -> dict[str, float]:
    """Time the pruned model against its parent; warn when it is not faster, fail under --require-speedup."""
    from vss_cli.engine.speed import SlowerThanParent, TimingSetup, compare_to_parent

    setup = TimingSetup(dtype=opts.dtype, warmup=max(2, opts.speed_check_iters // 5), iters=opts.speed_check_iters)
    cmp = compare_to_parent(parent, model, input_size=input_size, batch=opts.batch_size, device=device, setup=setup)
    if cmp.slower_than_parent and opts.require_speedup:
        raise SlowerThanParent(f"{cmp.message()}: --require-speedup refuses it (try a larger --round-to or ratio)")
    log(f"{'warning: ' if cmp.slower_than_parent else ''}{cmp.message()}")
    return cmp.metrics()


def prune_context(model, ignored, opts: PruneOptions, *, input_size, device, batch_source, fit, num_classes: int,
                  ignore_index: int, parent_config: dict | None = None) -> tuple:
    """The dependency graph, groups and PruneContext a method scores with, and the groups that only feed an
    auxiliary head (outside the inference graph: neither scored, counted nor pruned)."""
    torch.manual_seed(opts.seed)
    dg = build_graph(model, ignored)
    groups, aux_only = split_inference_groups(collect_groups(model, dg, ignored),
                                              inference_convs(model, tuple(input_size)))
    ctx = PruneContext(model=model, groups=groups, device=torch.device(device), num_classes=num_classes,
                       ignore_index=ignore_index, seed=opts.seed, samples=opts.samples, ratio=opts.global_ratio,
                       round_to=8 if opts.round_to == "auto" else opts.round_to, allocation=opts.allocation,
                       normalizer=opts.normalizer, budget=opts.budget,
                       input_size=tuple(input_size),
                       batch_source=batch_source, parent_config=dict(parent_config or {}),
                       fit=(lambda hooks, epochs, **kw: fit(model, hooks, epochs, **kw)) if fit else None)
    return dg, groups, ctx, aux_only


def prune_model(model, model_name: str, method, opts: PruneOptions, *, input_size, device, batch_source, fit,
                num_classes: int, ignore_index: int, count, old_history=(),
                parent_config: dict | None = None, budget=None) -> tuple[PruneReport, list]:
    """Score, plan and apply on an in-memory model; returns the report and the full pruning history."""
    model.to(device).eval()
    ignored = output_layers_of(model, model_name)
    before = count(model)
    ch_before = prunable_channels(model, ignored, inference_convs(model, tuple(input_size)))
    dg, groups, ctx, aux_only = prune_context(model, ignored, opts, input_size=input_size, device=device,
                                    batch_source=batch_source, fit=fit, num_classes=num_classes,
                                    ignore_index=ignore_index, parent_config=parent_config)
    t0 = time.perf_counter()
    prepared = method.prepare(ctx)
    scores = method.score(ctx)
    plan = plan_channels(method, ctx, scores, budget)
    notes = {**({"aux_only_groups": [g.name for g in aux_only]} if aux_only else {}),
             **({"scored_images": ctx.scored_images} if ctx.scored_images is not None else {}),
             **(prepared.notes() if prepared is not None else {}), **scores.report.notes(), **plan.notes()}
    t1 = time.perf_counter()
    apply_plan(dg, groups, plan.removed)
    t2 = time.perf_counter()
    model.eval()
    after = count(model)
    ch_after = prunable_channels(model, ignored, inference_convs(model, tuple(input_size)))
    report = PruneReport(
        method=method.name, requested_ratio=opts.global_ratio, channel_prune_ratio=1 - ch_after / ch_before,
        macs_reduction=1 - after.macs / before.macs if before.macs else 0.0,
        channels_before=ch_before, channels_after=ch_after, macs_before=before.macs, macs_after=after.macs,
        params_before=before.params, params_after=after.params, score_seconds=t1 - t0, prune_seconds=t2 - t1,
        extra_epochs=float(notes.get("extra_epochs", 0)), notes=notes,
    )
    history = [list(h) for h in old_history] + [[n, bool(o), list(i)] for n, o, i in dg.pruning_history()]
    return report, history
