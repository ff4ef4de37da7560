"""Does a latency budget buy more speed per MAC than a MACs budget? l1-pruned models at two ratios,
`--budget macs` (the ratio of MACs removed) against `--budget latency` (the ratio of measured latency
removed), each timed against its dense parent as deployed (conv-BN folded, paired iterations).

Prints per model, ratio and budget: MACs reduction (before / after), the measured speedup, and the
efficiency = speedup / MACs reduction (1.0: latency falls as fast as MACs do). For `--budget latency`,
`target` is the speedup the ratio asks for, 1 / (1 - ratio), and `ok` whether the measured speedup is
within ±15% of it: the timing claim `tests/test_latency.py` used to make on the shared CI machine
(the test now checks the planner with deterministic timings).

    python benchmarks/latency_budget.py                      # CUDA when present: 512x1024, bf16, batch 4, width 1
    python benchmarks/latency_budget.py --device cpu --threads 1   # CPU: width 0.25, 64x64, fp32, batch 1
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from vss_cli.engine.complexity import count_complexity
from vss_cli.engine.speed import measure_speed_pair, speedups
from vss_cli.models import build_model
from vss_cli.pruning.budget import get_budget
from vss_cli.pruning.registry import get_method
from vss_cli.store import Store
from vss_cli.workflows.latency_budget import LatencySetting, latency_planner
from vss_cli.workflows.prune import PruneOptions, prune_model

MODELS = ("unet", "simple_segnet", "resnet50_seg", "deeplabv3_resnet50")
CUDA = {"input_size": "512,1024", "dtype": "bf16", "batch": 4, "width": 1.0}
CPU = {"input_size": "64,64", "dtype": "fp32", "batch": 1, "width": 0.25}


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--ratios", default="0.3,0.5")
    ap.add_argument("--budgets", default="macs,latency")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--input-size", default=None, help="H,W (default 512,1024 on CUDA, 64,64 on CPU)")
    ap.add_argument("--dtype", default=None, help="default bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--batch", type=int, default=None, help="default 4 on CUDA, 1 on CPU")
    ap.add_argument("--width", type=float, default=None, help="channel multiplier (default 1 on CUDA, 0.25 on CPU)")
    ap.add_argument("--round-to", default="8", help="K or auto (auto applies to the latency budget only)")
    ap.add_argument("--iters", type=int, default=30, help="paired timing iterations")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    defaults = CUDA if args.device.startswith("cuda") else CPU
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.size = tuple(int(v) for v in args.input_size.split(","))
    return args


def _prune(dense, name: str, budget: str, ratio: float, args, store: Store):
    """(pruned model, MACs before, MACs after) for one budget."""
    model = copy.deepcopy(dense)
    round_to = args.round_to if args.round_to != "auto" else ("auto" if budget == "latency" else "8")
    round_to = round_to if round_to == "auto" else int(round_to)
    opts = PruneOptions(ckpt="-", method="l1", global_ratio=ratio, round_to=round_to, samples=0, budget=budget,
                        batch_size=args.batch, dtype=args.dtype)
    measured = None
    if budget == "latency":
        setting = LatencySetting(ratio=ratio, round_to=round_to, device=torch.device(args.device), dtype=args.dtype,
                                 batch=args.batch, input_size=args.size, iters=max(10, args.iters // 2))
        measured = get_budget("latency", planner=latency_planner(store, setting)[0])
    report, _ = prune_model(model, name, get_method("l1"), opts, input_size=args.size, device=args.device,
                            batch_source=None, fit=None, num_classes=19, ignore_index=255,
                            count=lambda m: count_complexity(m, args.size), budget=measured)
    return model.eval(), report.macs_before, report.macs_after


def main() -> None:
    args = _args()
    print(f"l1 on {args.device} {args.dtype}, batch {args.batch}, input {args.size[0]}x{args.size[1]}, "
          f"width {args.width}, round-to {args.round_to}, {torch.get_num_threads()} CPU threads, {args.iters} iters")
    print(f"{'model':<20} {'ratio':>5} {'budget':>8} {'MACs cut':>9} {'MACs x':>7} {'speedup':>8} {'IQR':>5} "
          f"{'effic.':>6} {'target':>6} {'ok':>3} {'s':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "vss.db")  # latency tables are measured once per model and reused across ratios
        for name in args.models.split(","):
            torch.manual_seed(0)
            dense = build_model(name, 19, width=args.width).to(args.device).eval()
            for ratio in (float(r) for r in args.ratios.split(",")):
                for budget in args.budgets.split(","):
                    t0 = time.perf_counter()
                    pruned, before, after = _prune(dense, name, budget, ratio, args, store)
                    base, cand = measure_speed_pair(dense, pruned, input_size=args.size, batch=args.batch,
                                                    device=args.device, dtype=args.dtype, warmup=5, iters=args.iters)
                    ups = speedups(base, cand)
                    factor, target = before / after, 1 / (1 - ratio)
                    ok = ("yes" if abs(ups["speedup_latency"] / target - 1) <= 0.15 else "no") if budget == "latency" else ""
                    print(f"{name:<20} {ratio:>5.2f} {budget:>8} {1 - after / before:>9.1%} {factor:>7.2f} "
                          f"{ups['speedup_latency']:>8.3f} {ups['speedup_iqr']:>5.2f} "
                          f"{ups['speedup_latency'] / factor:>6.2f} {f'{target:.2f}' if budget == 'latency' else '':>6} "
                          f"{ok:>3} {time.perf_counter() - t0:>5.0f}", flush=True)


if __name__ == "__main__":
    main()
