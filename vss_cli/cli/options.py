"""Options defined once as Annotated aliases and reused by every command (names follow the seed guide)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vss_cli.workflows.options import EvalOptions, ExportOptions, PruneOptions, TrainOptions, default_of


def parse_size(value: str | None) -> tuple[int, int] | None:
    """Parse 'H,W' (or a single 'S' for a square) into a (H, W) tuple."""
    if value is None or value == "":
        return None
    parts = [p.strip() for p in str(value).replace("x", ",").split(",") if p.strip()]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not H,W (e.g. 512,1024)") from None
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or min(nums) <= 0:
        raise typer.BadParameter(f"'{value}' is not H,W with positive sizes (e.g. 512,1024)")
    return nums[0], nums[1]


def parse_round_to(value: str) -> int | str:
    """`--round-to`: a positive integer or `auto`."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not a number or auto") from None


def parse_list(value: str | None, cast=str) -> list:
    if value is None:
        return []
    out = []
    for p in str(value).split(","):
        p = p.strip()
        if not p:
            continue
        try:
            out.append(cast(p))
        except ValueError:
            raise typer.BadParameter(f"'{p}' in '{value}' is not a valid {cast.__name__}") from None
    return out


def _option_value(text: str):
    """A method option's value: int, float, or the string as given."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_method_options(pairs: list[str] | None, *, methods: list[str] | None = None) -> dict[str | None, dict]:
    """`--option` values: `KEY=VALUE` (key None) or, method-qualified, `METHOD:KEY=VALUE`; keys use `_`.

    With `methods` (bench) every option must be qualified with one of them."""
    out: dict[str | None, dict] = {}
    for pair in pairs or []:
        head, eq, value = pair.partition("=")
        method, colon, key = head.rpartition(":") if ":" in head else (None, "", head)
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise typer.BadParameter(f"--option '{pair}' is not KEY=VALUE or METHOD:KEY=VALUE (e.g. fgp:share=0.8)")
        if methods is not None and method not in methods:
            raise typer.BadParameter(f"--option '{pair}' must name one of the grid's methods "
                                     f"({', '.join(methods)}) as METHOD:KEY=VALUE, e.g. fgp:share=0.8")
        out.setdefault(method.strip() if method else None, {})[key] = _option_value(value.strip())
    return out


PRUNE = {name: default_of(PruneOptions, name) for name in (
    "method", "global_ratio", "round_to", "allocation", "normalizer", "budget", "samples", "batch_size", "seed",
    "speed_check_iters", "require_speedup", "dtype")}
EVAL = {name: default_of(EvalOptions, name) for name in (
    "batch_size", "dtype", "channels_last", "speed_iters", "warmup", "oracle_samples", "oracle_layers",
    "oracle_methods", "reconstruction_batches", "split", "num_workers", "fuse_bn", "compile", "cuda_graphs")}
TRAIN = {name: default_of(TrainOptions, name) for name in (
    "weight_decay", "scheduler", "warmup_epochs", "slimming_lambda", "seed", "num_workers")}
EXPORT = {name: default_of(ExportOptions, name) for name in ("format", "fuse_bn")}

Dataset = Annotated[str | None, typer.Option("--dataset", help="synthetic, cityscapes, camvid or folder (default: "
                                             "what the --data-root layout shows, else synthetic)")]
CkptDataset = Annotated[str | None, typer.Option("--dataset", help="synthetic, cityscapes, camvid or folder "
                                                 "(default: the dataset recorded in the checkpoint)")]
NumClasses = Annotated[int | None, typer.Option("--num-classes", help="folder dataset without classes.txt: its "
                                                "class count (masks hold 0..N-1)")]
IgnoreIndex = Annotated[int | None, typer.Option("--ignore-index", help="folder dataset: the mask value that "
                                                 "marks unlabelled pixels (default 255)")]
ImgSuffix = Annotated[str | None, typer.Option("--img-suffix", help="folder dataset: image file ending, e.g. "
                                               ".jpg (default: any common image type)")]
SegSuffix = Annotated[str | None, typer.Option("--seg-suffix", help="folder dataset: mask file ending, e.g. "
                                               "_mask.png (default .png)")]


def folder_layout(num_classes: int | None = None, ignore_index: int | None = None, img_suffix: str | None = None,
                  seg_suffix: str | None = None) -> dict:
    """The folder-dataset settings given on the command line (the others stay the format's defaults)."""
    given = {"num_classes": num_classes, "ignore_index": ignore_index, "img_suffix": img_suffix,
             "seg_suffix": seg_suffix}
    return {k: v for k, v in given.items() if v is not None}
DataRoot = Annotated[Path | None, typer.Option("--data-root", help="dataset root folder (not needed for synthetic)")]
Model = Annotated[str | None, typer.Option("--model", help="model name (see `vss models`), smp:ARCH:ENCODER or "
                                          "package.module:factory; default depends on the dataset")]
InputSize = Annotated[str | None, typer.Option("--input-size", help="H,W crop/evaluation size; default depends on the dataset")]
Seed = Annotated[int, typer.Option("--seed", help="random seed")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")]
Save = Annotated[Path | None, typer.Option("--save", help="parent folder: the run writes into DIR/<run id> "
                                          "(default runs/<kind>/<run id>)")]
NumWorkers = Annotated[int, typer.Option("--num-workers", help="data-loader worker processes")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="batch size; default depends on the dataset")]
OutFormat = Annotated[str, typer.Option("--format", help="table, csv or json")]
FuseBn = Annotated[bool, typer.Option("--fuse-bn/--no-fuse-bn", help="fold conv-BN pairs into the convs, as "
                                     "deployed (timing and export; accuracy always uses the model as stored)")]
RoundToAuto = Annotated[str, typer.Option("--round-to", help="kept widths rounded up to multiples of K in layers "
                                          "at least 4K wide (1 = exact widths), or auto: the widths the latency "
                                          "table shows are fast (--budget latency)")]
Samples = Annotated[int, typer.Option("--samples", help="training images scored by data-driven methods")]
OracleSamples = Annotated[int, typer.Option("--oracle-samples", help="validation images for the oracle "
                                            "channel-importance analysis (0 = off)")]
TimingDtype = Annotated[str, typer.Option("--dtype", help="timing precision: fp32, bf16 or fp16 (fp16 needs CUDA); "
                                          "accuracy is measured in fp32")]
SpeedIters = Annotated[int, typer.Option("--speed-iters", help="timed iterations per model in each eval")]
WarmupIters = Annotated[int, typer.Option("--warmup", help="untimed warm-up iterations per model in each eval")]
OracleLayers = Annotated[int, typer.Option("--oracle-layers", help="layers (groups) the oracle analyses, "
                                           "spread evenly over the network")]
OracleMethods = Annotated[str, typer.Option("--oracle-methods", help="candidate (its pruning criterion) or all")]
ChannelsLast = Annotated[bool, typer.Option("--channels-last", help="time with channels-last memory format")]
ReconBatches = Annotated[int, typer.Option("--reconstruction-batches", help="validation batches the logits' "
                                           "reconstruction MSE is measured on (0 = off)")]
Split = Annotated[str, typer.Option("--split", help="split the metrics are measured on")]
SpeedCheckIters = Annotated[int, typer.Option("--speed-check-iters", help="paired iterations timing the pruned "
                                              "model against its parent, as deployed (0 = off)")]
RequireSpeedup = Annotated[bool, typer.Option("--require-speedup", help="fail the run (exit 1, no checkpoint) "
                                             "when the pruned model is not faster than its parent")]
Compile = Annotated[bool, typer.Option("--compile", help="time the torch.compile'd models")]
CudaGraphs = Annotated[bool, typer.Option("--cuda-graphs", help="time CUDA-graph replays (CUDA only)")]
EvalBatch = Annotated[int, typer.Option("--batch-size", help="evaluation and timing batch size")]
MethodOption = Annotated[list[str] | None, typer.Option("--option", help="method option KEY=VALUE (repeatable)")]
MaxIters = Annotated[int | None, typer.Option("--max-iters-per-epoch", help="cap iterations per training epoch "
                                              "(smoke runs)")]
Allocation = Annotated[str, typer.Option("--allocation", help="how the cut is spread over layers: paper (each "
                                         "method's own rule), uniform (same fraction per layer) or global "
                                         "(one threshold on normalised scores)")]
Normalizer = Annotated[str, typer.Option("--normalizer", help="per-layer score normalisation of --allocation "
                                         "global: mean, max or none")]
Budget = Annotated[str, typer.Option("--budget", help="what --global-ratio counts: channels, macs, or latency "
                                     "(measured on --device/--dtype/--batch-size/--input-size)")]
TensorBoard = Annotated[Path | None, typer.Option("--tensorboard", help="also write the per-epoch scalars as "
                                                "TensorBoard event files under DIR/<kind>-<run id>")]
