"""Does physical pruning pay off in latency? MACs reduction vs measured CPU speedup, per model.

For each model, l1 pruning at each ratio and each `--round-to`; the pruned copy and its baseline are
timed alternately by `vss_cli.engine.speed.measure_speed_pair` (the timing `vss eval` uses: same input,
`torch.inference_mode`, ABBA order, median of many runs), and the table shows the MACs speedup the
pruning promises next to the latency speedup it delivers.

    python benchmarks/prune_speed.py                                  # every model, defaults below
    python benchmarks/prune_speed.py --models unet,deeplabv3_resnet50 --width 1.0 --input-size 256,512

Defaults keep a full run within ~10 minutes on a 2-core CPU: 128×256 inputs, the small models (U-Net,
SegNet) at their published width 1.0, the ResNet-based ones at width 0.5 (`--width` sets one width for
all), and one torch thread: on a CPU shared with other work, two intra-op threads wait on each other and
the medians become noise (measured here: 1 thread 330-380 ms, 2 threads 1.2-3.0 s for the same model).
Weights are random: speed does not depend on their values, and which channels l1 keeps does not change
the shapes.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
from rich.console import Console
from rich.table import Table

from vss_cli.engine.complexity import count_complexity
from vss_cli.engine.speed import device_name, measure_speed_pair
from vss_cli.models import build_model, list_models
from vss_cli.pruning.registry import get_method
from vss_cli.workflows.prune import PruneOptions, PruneReport, prune_model

SMALL_MODELS = ("unet", "simple_segnet")
SMALL_WIDTH, RESNET_WIDTH = 1.0, 0.5
NUM_CLASSES = 19


@dataclass
class Row:
    model: str
    width: float
    ratio: float
    round_to: int
    achieved_ratio: float
    macs_before: int
    macs_after: int
    base_ms: float
    pruned_ms: float

    @property
    def macs_reduction(self) -> float:
        return 1 - self.macs_after / self.macs_before

    @property
    def macs_speedup(self) -> float:
        return self.macs_before / self.macs_after

    @property
    def latency_speedup(self) -> float:
        return self.base_ms / self.pruned_ms


def default_width(name: str) -> float:
    return SMALL_WIDTH if name in SMALL_MODELS else RESNET_WIDTH


def pruned_copy(baseline: nn.Module, name: str, ratio: float, round_to: int,
                input_size: tuple[int, int]) -> tuple[nn.Module, PruneReport]:
    """An l1-pruned deep copy of `baseline` (the baseline itself is left as it is)."""
    model = copy.deepcopy(baseline)
    opts = PruneOptions(ckpt="", method="l1", global_ratio=ratio, round_to=round_to, samples=0)
    report, _ = prune_model(model, name, get_method("l1"), opts, input_size=input_size, device="cpu",
                            batch_source=None, fit=None, num_classes=NUM_CLASSES, ignore_index=255,
                            count=lambda m: count_complexity(m, input_size))
    return model, report


def bench_model(name: str, width: float, ratios: list[float], round_tos: list[int], input_size: tuple[int, int],
                iters: int, warmup: int) -> list[Row]:
    torch.manual_seed(0)
    baseline = build_model(name, NUM_CLASSES, width=width).eval()
    rows = []
    for ratio in ratios:
        for round_to in round_tos:
            pruned, report = pruned_copy(baseline, name, ratio, round_to, input_size)
            base, cand = measure_speed_pair(baseline, pruned, input_size=input_size, batch=1, device="cpu",
                                            warmup=warmup, iters=iters)
            rows.append(Row(name, width, ratio, round_to, report.achieved_ratio, report.macs_before,
                            report.macs_after, base.median_ms, cand.median_ms))
    return rows


def render(rows: list[Row]) -> Table:
    table = Table(show_lines=False)
    for col in ("model", "width", "ratio", "round", "channels -", "GMACs", "MACs -", "MACs x",
                "base ms", "pruned ms", "latency x"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for r in rows:
        table.add_row(r.model, f"{r.width:g}", f"{r.ratio:.1f}", str(r.round_to), f"{r.achieved_ratio:.1%}",
                      f"{r.macs_before / 1e9:.2f}->{r.macs_after / 1e9:.2f}", f"{r.macs_reduction:.1%}",
                      f"{r.macs_speedup:.2f}", f"{r.base_ms:.1f}", f"{r.pruned_ms:.1f}", f"{r.latency_speedup:.2f}")
    return table


def csv_list(text: str, cast):
    return [cast(v) for v in text.split(",") if v.strip()]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(list_models()), help="comma-separated subset of the registry")
    p.add_argument("--width", type=float, default=None,
                   help=f"one width for every model (default: {SMALL_WIDTH:g} for {', '.join(SMALL_MODELS)}, "
                        f"{RESNET_WIDTH:g} for the ResNet-based models)")
    p.add_argument("--input-size", default="128,256", help="H,W of the timed input")
    p.add_argument("--ratios", default="0.3,0.5")
    p.add_argument("--round-to", default="1,8", help="comma-separated --round-to values")
    p.add_argument("--iters", type=int, default=8, help="timed runs per model (alternating, median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models, ratios = csv_list(args.models, str), csv_list(args.ratios, float)
    round_tos, size = csv_list(args.round_to, int), tuple(csv_list(args.input_size, int))
    console = Console(width=max(Console().width, 140))
    widths = {m: args.width if args.width is not None else default_width(m) for m in models}
    console.print(f"l1 pruning, CPU latency: {device_name(torch.device('cpu'))}; input 1x3x{size[0]}x{size[1]}, "
                  f"{NUM_CLASSES} classes, fp32, inference_mode; median of {args.iters} alternating runs after "
                  f"{args.warmup} warm-up; widths: {', '.join(f'{m}={w:g}' for m, w in widths.items())}")
    start, rows = time.perf_counter(), []
    for name in models:
        rows += bench_model(name, widths[name], ratios, round_tos, size, args.iters, args.warmup)
        console.print(f"  {name} done ({time.perf_counter() - start:.0f} s)", style="dim")
    console.print(render(rows))
    console.print("MACs x = MACs before / after (the promised speedup); latency x = median baseline ms / "
                  "median pruned ms (the delivered one).")


if __name__ == "__main__":
    main()
