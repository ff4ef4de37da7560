"""`vss train` and `vss finetune`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from vss_cli.cli import options as o
from vss_cli.cli.models import ModelOption
from vss_cli.cli.output import console
from vss_cli.cli.state import STATE

Epochs = Annotated[int | None, typer.Option("--epochs", help="training epochs (dataset default)")]
Lr = Annotated[float | None, typer.Option("--lr", help="initial learning rate (dataset default)")]
WeightDecay = Annotated[float, typer.Option("--weight-decay", help="SGD weight decay (not on BN/bias)")]
Scheduler = Annotated[str, typer.Option("--scheduler", help="poly (per iteration, power 0.9), cosine or step")]
Warmup = Annotated[float, typer.Option("--warmup-epochs", help="linear warm-up length in epochs")]
SlimLambda = Annotated[float, typer.Option("--slimming-lambda", help="L1 penalty on BN γ (network slimming)")]
Amp = Annotated[bool, typer.Option("--amp/--no-amp", help="mixed precision autocast (CUDA; bf16 unless --amp-dtype)")]
AmpDtype = Annotated[str, typer.Option("--amp-dtype", help="bf16 or fp16 (fp16 uses a grad scaler)")]
Width = Annotated[float | None, typer.Option("--width", help="channel multiplier of the model (1.0 = published)")]
AuxLoss = Annotated[bool, typer.Option("--aux-loss", help="train the auxiliary head (weight 0.5)")]
Pretrained = Annotated[bool, typer.Option("--pretrained-backbone", help="load torchvision ImageNet backbone weights")]
BackboneWeights = Annotated[str | None, typer.Option("--backbone-weights", help="backbone state_dict file")]
Resume = Annotated[bool, typer.Option("--resume", help="continue the unfinished run of this configuration")]
ClassWeights = Annotated[bool, typer.Option("--class-weights", help="median-frequency class weights in the loss")]
SyncBN = Annotated[bool, typer.Option("--sync-bn", help="SyncBatchNorm under torchrun")]
ModelFrom = Annotated[str, typer.Option("--model-from", help="pruned checkpoint (.pt) or run id to fine-tune")]


T = o.TRAIN


def _model_kwargs(width: float | None = None, aux_loss: bool = False, pretrained_backbone: bool = False,
                  backbone_weights: str | None = None, model_option: list[str] | None = None) -> dict:
    """The model-builder arguments the flags ask for (none given: the dataset's default model)."""
    from vss_cli.cli.models import parse_model_options

    given = {"width": width, "aux_loss": aux_loss or None, "pretrained_backbone": pretrained_backbone or None,
             "backbone_weights": backbone_weights}
    return {**{k: v for k, v in given.items() if v is not None}, **parse_model_options(model_option)}


def _common(data_root, input_size, amp: bool, amp_dtype: str, save, tensorboard) -> dict:
    """The options both commands convert the same way."""
    return {"data_root": str(data_root) if data_root else None, "input_size": o.parse_size(input_size),
            "amp": amp_dtype if amp else None, "save": str(save) if save else None,
            "tensorboard": str(tensorboard) if tensorboard else None}


def _print(outcome, kind: str) -> None:
    if outcome.run_id is None:
        return
    console.print(Text.assemble(
        f"{kind} run ", (outcome.run_id, "bold"), f": best val mIoU {outcome.best_miou:.4f} "
        f"in {outcome.fit.seconds:.1f}s -> {outcome.checkpoint}"), highlight=False, soft_wrap=True,
    )


def train(
    dataset: o.Dataset = None, data_root: o.DataRoot = None, model: o.Model = None, epochs: Epochs = None,
    batch_size: o.BatchSize = None, lr: Lr = None, weight_decay: WeightDecay = T["weight_decay"],
    scheduler: Scheduler = T["scheduler"], warmup_epochs: Warmup = T["warmup_epochs"],
    slimming_lambda: SlimLambda = T["slimming_lambda"], input_size: o.InputSize = None, amp: Amp = False,
    amp_dtype: AmpDtype = "bf16", seed: o.Seed = T["seed"], device: o.Device = "auto", save: o.Save = None,
    num_workers: o.NumWorkers = T["num_workers"], resume: Resume = False, width: Width = None,
    aux_loss: AuxLoss = False, pretrained_backbone: Pretrained = False, backbone_weights: BackboneWeights = None,
    class_weights: ClassWeights = False, sync_bn: SyncBN = False, max_iters_per_epoch: o.MaxIters = None,
    model_from: Annotated[str | None, typer.Option("--model-from", help="start from this (pruned) checkpoint or "
                                                   "run: the same as `vss finetune`")] = None,
    tensorboard: o.TensorBoard = None, num_classes: o.NumClasses = None, ignore_index: o.IgnoreIndex = None,
    img_suffix: o.ImgSuffix = None, seg_suffix: o.SegSuffix = None, model_option: ModelOption = None,
) -> None:
    """Train a baseline (defaults: built-in synthetic data and the small default model)."""
    from vss_cli.workflows.paths import precheck

    precheck(data_root, {"--model-from": model_from}, STATE.store())  # before torch loads: a typo fails at once
    from vss_cli.workflows.train import TrainOptions, train_run

    opts = TrainOptions(
        dataset=dataset, model=model, model_kwargs=_model_kwargs(width, aux_loss, pretrained_backbone, backbone_weights,
                                                               model_option),
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, scheduler=scheduler,
        warmup_epochs=warmup_epochs, slimming_lambda=slimming_lambda, seed=seed, device=device,
        num_workers=num_workers, class_weights=class_weights, sync_bn=sync_bn,
        max_iters_per_epoch=max_iters_per_epoch, model_from=model_from, resume=resume,
        dataset_options=o.folder_layout(num_classes, ignore_index, img_suffix, seg_suffix),
        **_common(data_root, input_size, amp, amp_dtype, save, tensorboard),
    )
    _print(train_run(opts, STATE.store()), "finetune" if model_from else "train")


def finetune(
    model_from: ModelFrom, dataset: o.CkptDataset = None, data_root: o.DataRoot = None, epochs: Epochs = None,
    batch_size: o.BatchSize = None, lr: Lr = None, weight_decay: WeightDecay = T["weight_decay"],
    scheduler: Scheduler = T["scheduler"], warmup_epochs: Warmup = T["warmup_epochs"],
    slimming_lambda: SlimLambda = T["slimming_lambda"], input_size: o.InputSize = None, amp: Amp = False,
    amp_dtype: AmpDtype = "bf16", seed: o.Seed = T["seed"], device: o.Device = "auto", save: o.Save = None,
    num_workers: o.NumWorkers = T["num_workers"], resume: Resume = False,
    class_weights: ClassWeights = False, sync_bn: SyncBN = False, max_iters_per_epoch: o.MaxIters = None,
    tensorboard: o.TensorBoard = None,
) -> None:
    """Train starting from a (pruned) checkpoint, keeping its architecture."""
    from vss_cli.workflows.paths import precheck

    precheck(data_root, {"--model-from": model_from}, STATE.store())  # before torch loads: a typo fails at once
    from vss_cli.workflows.train import TrainOptions, train_run

    opts = TrainOptions(
        dataset=dataset, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        scheduler=scheduler, warmup_epochs=warmup_epochs, slimming_lambda=slimming_lambda, seed=seed,
        device=device, num_workers=num_workers, class_weights=class_weights, sync_bn=sync_bn,
        max_iters_per_epoch=max_iters_per_epoch, model_from=model_from, resume=resume,
        **_common(data_root, input_size, amp, amp_dtype, save, tensorboard),
    )
    _print(train_run(opts, STATE.store(), kind="finetune"), "finetune")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("finetune")(finetune)
