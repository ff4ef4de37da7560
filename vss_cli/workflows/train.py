"""`vss train` and `vss finetune`: one recipe over the one `engine.fit`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from vss_cli.data.checks import preflight
from vss_cli.engine.checkpoint import ModelSpec
from vss_cli.engine.progress import log, log_epoch
from vss_cli.engine.rng import seed_everything
from vss_cli.engine.train import FitResult, TrainConfig, TrainHooks, fit
from vss_cli.errors import ConfigError, RunTakenOver, StoreError
from vss_cli.pruning.checkpoint import load_checkpoint
from vss_cli.store.identity import worker_id
from vss_cli.store.queue import RunStore, refuse_live, take
from vss_cli.store.rows import STALE_AFTER_S
from vss_cli.workflows.common import (
    check_writable,
    default_out_dir,
    infer_dataset,
    recorded,
    resolve_device,
    versions,
)
from vss_cli.workflows.options import TrainOptions
from vss_cli.workflows.paths import (
    choose_input_size,
    looks_like_path,
    recorded_input_size,
    resolve_checkpoint,
)
from vss_cli.workflows.prechecks import check_folder_option, check_input_size

__all__ = ["TrainOptions", "TrainOutcome", "train_run", "validate"]


@dataclass
class TrainOutcome:
    run_id: str
    out_dir: Path
    checkpoint: Path
    best_miou: float
    fit: FitResult


RESULT_FREE_FIELDS = ("save", "resume", "num_workers", "device", "tensorboard")


def inherit_dataset(opts: TrainOptions, store: RunStore) -> TrainOptions:
    """Fine-tuning uses the dataset (and root) and the input size recorded in its checkpoint, unless
    given; a fresh run without --dataset takes what its --data-root layout shows, else synthetic."""
    if opts.model_from:
        from vss_cli.engine.checkpoint import read_checkpoint

        ref = resolve_checkpoint(store, opts.model_from, option="--model-from")
        ds = read_checkpoint(ref.path)["dataset"]
        same = not opts.dataset or opts.dataset == ds.get("name")
        if not Path(opts.model_from).is_file() and looks_like_path(opts.model_from):
            opts = replace(opts, model_from=str(ref.path))  # a seed path, resolved (and said) once
        return replace(opts, dataset=opts.dataset or ds.get("name", "synthetic"),
                       data_root=opts.data_root or (ds.get("data_root") if same else None),
                       dataset_options=opts.dataset_options or (dict(ds.get("layout") or {}) if same else {}),
                       input_size=opts.input_size or (recorded_input_size(ds, ref.run) if same else None))
    if opts.dataset:
        return opts
    return replace(opts, dataset=infer_dataset(None, opts.data_root) or "synthetic")


def dataset_spec(opts: TrainOptions):
    """The dataset spec of the options (a folder dataset's classes and layout included)."""
    from vss_cli.data import get_spec

    return get_spec(opts.dataset, opts.data_root, **opts.dataset_options)


def resolve_options(opts: TrainOptions, parent_dataset: dict | None = None) -> TrainOptions:
    """Fill dataset defaults and validate ranges before anything is written."""
    from vss_cli.data import dataset_defaults

    spec = dataset_defaults(opts.dataset)  # its root (and a folder tree's classes) are checked below
    if spec.needs_root and not opts.data_root:
        raise ConfigError(f"--dataset {spec.name} needs --data-root DIR (the folder laid out as the guide says)")
    model = opts.model or (parent_dataset or {}).get("model") or spec.default_model
    kwargs = dict(opts.model_kwargs)
    if not opts.model and not kwargs and model == spec.default_model:
        kwargs = dict(spec.default_model_kwargs)
    resolved = TrainOptions(**{
        **asdict(opts),
        "model": model,
        "model_kwargs": kwargs,
        "epochs": opts.epochs if opts.epochs is not None else spec.default_epochs,
        "batch_size": opts.batch_size or spec.default_batch_size,
        "lr": opts.lr if opts.lr is not None else spec.default_lr,
        "input_size": tuple(opts.input_size or spec.default_input_size),
        "data_root": str(Path(opts.data_root).resolve()) if opts.data_root else None,
    })
    validate(resolved)
    if resolved.epochs == 0:  # a template of no epochs is valid (a grid without fine-tuning); a run is not
        raise ConfigError("--epochs 0 trains nothing: pass --epochs 1 or more")
    return resolved


def validate(opts: TrainOptions) -> None:
    """Range checks; `None` (the dataset's default) passes. `resolve_options` runs them on the resolved values."""
    checks = [
        (opts.epochs is None or opts.epochs >= 0, f"--epochs {opts.epochs} is negative: pass 0 or more"),
        (opts.batch_size is None or opts.batch_size >= 1, f"--batch-size {opts.batch_size} must be at least 1"),
        (opts.lr is None or opts.lr > 0, f"--lr {opts.lr} must be positive"),
        (opts.slimming_lambda >= 0, f"--slimming-lambda {opts.slimming_lambda} must be >= 0"),
        (opts.amp in (None, "bf16", "fp16"), f"--amp-dtype {opts.amp} is unknown: use bf16 or fp16"),
        (opts.max_iters_per_epoch is None or opts.max_iters_per_epoch >= 1,
         f"--max-iters-per-epoch {opts.max_iters_per_epoch} must be at least 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def run_config(opts: TrainOptions) -> dict:
    """The run's config: every option that can change the result."""
    cfg = asdict(opts)
    for k in RESULT_FREE_FIELDS:
        cfg.pop(k, None)
    cfg["input_size"] = list(cfg["input_size"]) if cfg["input_size"] else None
    return cfg


def config_and_key(opts: TrainOptions, kind: str, parent_path: Path | None = None) -> tuple[dict, str]:
    """The config and config_key `train_run` records for resolved options (bench looks baselines up by it)."""
    from vss_cli.models import model_provenance
    from vss_cli.store import config_key, file_sha256

    source = model_provenance(opts.model) if opts.model else {}  # import path / package version of an outside model
    config = {**run_config(opts), "kind": kind, **({"model_source": source} if source else {})}
    return config, config_key(config, [file_sha256(parent_path)] if parent_path else [])


def _distributed_setup(device: torch.device) -> tuple[bool, int, int]:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False, 0, 1
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True, torch.distributed.get_rank(), world


def _loaders(opts: TrainOptions, distributed: bool):
    from vss_cli.data import build_dataset, build_loader

    spec = dataset_spec(opts)
    train_ds = build_dataset(spec, "train", data_root=opts.data_root, input_size=opts.input_size,
                             train=True, seed=opts.seed)
    val_ds = build_dataset(spec, "val", data_root=opts.data_root, input_size=opts.input_size,
                           train=False, seed=opts.seed)
    train = build_loader(train_ds, batch_size=opts.batch_size, train=True, num_workers=opts.num_workers,
                         seed=opts.seed, distributed=distributed)
    val = build_loader(val_ds, batch_size=opts.batch_size, train=False, num_workers=opts.num_workers,
                       seed=opts.seed, distributed=distributed)
    return train, val


def _class_weights(opts: TrainOptions):
    if not opts.class_weights:
        return None
    from vss_cli.data import class_weights

    return class_weights(dataset_spec(opts), opts.data_root)


def prepare_model(opts: TrainOptions, store: RunStore):
    """Build the model (fresh, or from a pruned checkpoint for finetune); returns (model, spec, history, parent)."""
    from vss_cli.models import build_model

    spec = dataset_spec(opts)
    if opts.model_from:
        ref = resolve_checkpoint(store, opts.model_from, option="--model-from")
        loaded = load_checkpoint(ref.path)
        ck_classes = loaded.spec.num_classes
        if ck_classes != spec.num_classes:
            raise ConfigError(
                f"{ref.path} predicts {ck_classes} classes but {spec.name} has {spec.num_classes}: "
                "pass the matching --dataset"
            )
        return loaded.model, loaded.spec, loaded.history, ref
    model = build_model(opts.model, spec.num_classes, **opts.model_kwargs)
    storable = {k: v for k, v in opts.model_kwargs.items() if k not in ("pretrained_backbone", "backbone_weights")}
    return model, ModelSpec(opts.model, spec.num_classes, storable), [], None


def train_run(opts: TrainOptions, store: RunStore, *, kind: str = "train", hooks: TrainHooks | None = None) -> TrainOutcome:
    """Train (or fine-tune) a model and record the run, its checkpoints and per-epoch metrics."""
    device = resolve_device(opts.device)
    if opts.model_from and kind == "train":
        kind = "finetune"
    given_size = opts.input_size
    opts = inherit_dataset(opts, store)
    inherited_size = None if given_size else opts.input_size
    opts = resolve_options(opts)
    choose_input_size(given_size, inherited_size, opts.input_size, recorded_from=str(opts.model_from))
    preflight(dataset_spec(opts), opts.data_root, ("train", "val"))  # bad labels stop here, before any run row
    check_folder_option(opts.save, "--save", "<save>/<run id>/best.pt")
    if opts.tensorboard:
        from vss_cli.engine.tensorboard import require_tensorboard

        require_tensorboard()
    distributed, rank, world = _distributed_setup(device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    seed_everything(opts.seed)  # before the model is built: --seed fixes its initial weights too
    model, mspec, history, parent = prepare_model(opts, store)
    check_input_size(model, opts.input_size, device)
    if opts.model_from:
        opts = replace(opts, model=mspec.name)
    if opts.sync_bn and distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_loader, val_loader = _loaders(opts, distributed)
    config, key = config_and_key(opts, kind, parent.path if parent else None)
    main = rank == 0
    run_id, out_dir, resume_from = None, None, None
    if main:
        run_id, out_dir, resume_from = _open_run(store, kind, config, key, opts, parent, device, world)
    dataset = dataset_spec(opts)
    dspec = dataset.to_dict()
    cfg = TrainConfig(
        epochs=opts.epochs, lr=opts.lr, weight_decay=opts.weight_decay, scheduler=opts.scheduler,
        warmup_epochs=opts.warmup_epochs, amp=opts.amp,
        seed=opts.seed, device=str(device), max_iters_per_epoch=opts.max_iters_per_epoch,
    )
    board = _tensorboard(opts, kind, run_id) if main else None
    hooks = _run_hooks(hooks or TrainHooks(), opts, store, run_id if main else None, board)
    ctx = recorded(store, run_id) if main else contextlib.nullcontext()
    with ctx, board or contextlib.nullcontext():
        for name in ("best.pt", "last.pt") if main else ():
            check_writable(store, run_id, out_dir / name)
        with _checkpoints_recorded_if_stopped(store, run_id, out_dir):
            result = fit(model, train_loader, val_loader, cfg, num_classes=mspec.num_classes,
                         ignore_index=dataset.ignore_index, spec=mspec, history=history,
                         dataset={**dspec, "data_root": opts.data_root, "input_size": list(opts.input_size)},
                         out_dir=out_dir, hooks=hooks, resume_from=resume_from, class_weights=_class_weights(opts))
        if main:
            store.add_metrics(run_id, {"best_val_miou": result.best_miou, "best_epoch": result.best_epoch,
                                       "train_seconds": result.seconds})
            store.add_artifact(run_id, kind="checkpoint", path=result.best_path)
            store.add_artifact(run_id, kind="last-checkpoint", path=result.last_path or result.best_path)
    if distributed:
        torch.distributed.barrier()
    return TrainOutcome(run_id=run_id, out_dir=out_dir, checkpoint=result.best_path, best_miou=result.best_miou,
                        fit=result)


@contextlib.contextmanager
def _checkpoints_recorded_if_stopped(store, run_id: str | None, out_dir: Path | None) -> Iterator[None]:
    """When training stops early (a signal, an error), record the complete best.pt / last.pt it left
    as the run's artifacts, so `runs gc` sees them and `--resume` finds them; not when the run was
    taken over (it is another worker's) or the database is gone."""
    try:
        yield
    except RunTakenOver:
        raise
    except BaseException:
        if run_id is not None and out_dir is not None:
            with contextlib.suppress(StoreError):
                for name, kind in (("best.pt", "checkpoint"), ("last.pt", "last-checkpoint")):
                    if (out_dir / name).is_file():
                        store.add_artifact(run_id, kind=kind, path=out_dir / name)
        raise


def _run_hooks(hooks: TrainHooks, opts: TrainOptions, store, run_id: str | None, board=None) -> TrainHooks:
    """The caller's hooks (left untouched) plus this run's: slimming's L1 subgradient when
    `--slimming-lambda` is set, and recording each epoch's scalars on the run row (rank 0) and,
    with `--tensorboard`, in `board`'s event file; before each epoch's checkpoints and metrics, a
    check that the run is still this process's (`Store.heartbeat(worker=...)`, RunTakenOver if not)."""
    extra = {}
    if opts.slimming_lambda and hooks.regularize is None:
        from vss_cli.pruning.methods.slimming import slimming_regularizer

        extra["regularize"] = slimming_regularizer(opts.slimming_lambda)
    if run_id is not None:
        user_hook, user_before_save, me = hooks.on_epoch_end, hooks.before_save, worker_id()

        def still_mine(epoch: int) -> None:
            store.heartbeat(run_id, worker=me)  # RunTakenOver, before any write, if another worker took it
            if user_before_save is not None:
                user_before_save(epoch)

        def on_epoch_end(epoch: int, scalars: dict) -> None:
            store.heartbeat(run_id, worker=me)
            store.add_metrics(run_id, scalars, step=epoch)
            log_epoch(epoch, opts.epochs, scalars)
            if board is not None:
                board(epoch, scalars)
            if user_hook is not None:
                user_hook(epoch, scalars)

        extra.update(on_epoch_end=on_epoch_end, before_save=still_mine)
    return replace(hooks, **extra)


def _tensorboard(opts: TrainOptions, kind: str, run_id: str):
    """The event-file hook of `--tensorboard DIR` (None without it)."""
    if not opts.tensorboard:
        return None
    from vss_cli.engine.tensorboard import TensorBoardHook, run_log_dir

    return TensorBoardHook(run_log_dir(opts.tensorboard, kind, run_id))


def _open_run(store, kind, config, key, opts: TrainOptions, parent, device, world):
    """Create the run row, or with --resume reopen the newest unfinished run of the same config."""
    parents = [(parent.run_id, "finetuned-from")] if parent and parent.run_id else []
    if opts.resume:
        for run in store.list_runs(kind=kind, config_key=key):
            last = Path(run.out_dir or "") / "last.pt"
            if run.status == "completed" or not last.is_file():
                continue
            refuse_live(run, STALE_AFTER_S, "--resume")  # a live worker's run is never taken over
            # a failed run is retried too: its last.pt is complete (atomic), e.g. after a full disk
            if take(store, run, STALE_AFTER_S, retry=run.status == "failed"):
                log(f"resuming run {run.id} from {last}")
                return run.id, Path(run.out_dir), last
        log("--resume: no unfinished run with this configuration; starting a new one")
    cfg = {**config, "world_size": world} if world > 1 else config
    run = store.create_run(kind=kind, config=cfg, parents=parents, config_key=key,
                           versions=versions(device), status="running")
    out_dir = default_out_dir(kind, run.id, opts.save)
    out_dir.mkdir(parents=True, exist_ok=True)
    store.update_run(run.id, out_dir=str(out_dir.resolve()))
    log(f"{kind} run {run.id} -> {out_dir}")
    return run.id, out_dir, None
