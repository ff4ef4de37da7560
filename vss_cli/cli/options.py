"""Options defined once as Annotated aliases and reused by every command (names follow the seed guide)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


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


Dataset = Annotated[str | None, typer.Option("--dataset", help="synthetic, cityscapes or camvid (default: what "
                                             "the --data-root layout shows, else synthetic)")]
CkptDataset = Annotated[str | None, typer.Option("--dataset", help="synthetic, cityscapes or camvid (default: the "
                                                 "dataset recorded in the checkpoint)")]
DataRoot = Annotated[Path | None, typer.Option("--data-root", help="dataset root folder (not needed for synthetic)")]
Model = Annotated[str | None, typer.Option("--model", help="model name (see `vss models`); default depends on the dataset")]
InputSize = Annotated[str | None, typer.Option("--input-size", help="H,W crop/evaluation size; default depends on the dataset")]
Seed = Annotated[int, typer.Option("--seed", help="random seed")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")]
Save = Annotated[Path | None, typer.Option("--save", help="parent folder: the run writes into DIR/<run id> "
                                          "(default runs/<kind>/<run id>)")]
NumWorkers = Annotated[int, typer.Option("--num-workers", help="data-loader worker processes")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="batch size; default depends on the dataset")]
OutFormat = Annotated[str, typer.Option("--format", help="table, csv or json")]
RoundTo = Annotated[int, typer.Option("--round-to", help="kept widths rounded up to multiples of K in layers at least "
                                      "4K wide (1 = exact widths)")]
FuseBn = Annotated[bool, typer.Option("--fuse-bn/--no-fuse-bn", help="fold conv-BN pairs into the convs, as "
                                     "deployed (timing and export; accuracy always uses the model as stored)")]
RoundToAuto = Annotated[str, typer.Option("--round-to", help="kept widths rounded up to multiples of K in layers "
                                          "at least 4K wide (1 = exact widths), or auto: the widths the latency table shows are fast (--budget latency)")]
Samples = Annotated[int, typer.Option("--samples", help="training images scored by data-driven methods")]
OracleSamples = Annotated[int, typer.Option("--oracle-samples", help="validation images for the oracle "
                                            "channel-importance analysis (0 = off)")]
TimingDtype = Annotated[str, typer.Option("--dtype", help="timing precision: fp32, bf16 or fp16 (fp16 needs CUDA); "
                                          "accuracy is measured in fp32")]
SpeedIters = Annotated[int, typer.Option("--speed-iters", help="timed iterations per model in each eval")]
WarmupIters = Annotated[int, typer.Option("--warmup", help="untimed warm-up iterations per model in each eval")]
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
