"""Does rounding kept widths to multiples of 8 pay off? DeepLabV3-R50 (full width) pruned with l1 at
0.3, with --round-to 1 and 8, timed against the dense model side by side (alternating iterations).

    python benchmarks/round_to_speed.py [--device cuda] [--dtype bf16] [--input-size 512,1024] [--batch 4]
"""

from __future__ import annotations

import argparse

import torch

from vss_cli.engine.complexity import count_complexity
from vss_cli.engine.speed import measure_speed_pair
from vss_cli.models import build_model
from vss_cli.pruning.registry import get_method
from vss_cli.workflows.prune import PruneOptions, prune_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="deeplabv3_resnet50")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--input-size", default="512,1024")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.input_size.split(","))
    print(f"{args.model} width {args.width} ratio {args.ratio} on {args.device} {args.dtype} "
          f"batch {args.batch} input {size[0]}x{size[1]}")
    print(f"{'round_to':>8} {'GMACs':>14} {'dense ms':>9} {'pruned ms':>9} {'speedup':>8}")
    for round_to in (1, 8):
        torch.manual_seed(0)
        dense = build_model(args.model, 19, width=args.width).eval()
        pruned = build_model(args.model, 19, width=args.width).eval()
        pruned.load_state_dict(dense.state_dict())
        opts = PruneOptions(ckpt="-", method="l1", global_ratio=args.ratio, round_to=round_to)
        report, _ = prune_model(pruned, args.model, get_method("l1"), opts, input_size=size, device="cpu",
                                batch_source=None, fit=None, num_classes=19, ignore_index=255,
                                count=lambda m: count_complexity(m, size))
        base, cand = measure_speed_pair(dense.to(args.device), pruned.to(args.device), input_size=size,
                                        batch=args.batch, device=args.device, dtype=args.dtype,
                                        warmup=5, iters=args.iters)
        print(f"{round_to:>8} {report.macs_before / 1e9:6.1f}->{report.macs_after / 1e9:6.1f} "
              f"{base.median_ms:9.2f} {cand.median_ms:9.2f} {base.median_ms / cand.median_ms:8.2f}")


if __name__ == "__main__":
    main()
