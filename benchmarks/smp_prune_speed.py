"""segmentation_models_pytorch architectures under vss pruning: MACs before/after and paired CPU speedup.

For each smp architecture over one encoder (default resnet18, random weights), `vss models check`'s
machinery first (can it be pruned at all? a blocker prints its one line), then an l1 prune at
`--ratio` of MACs (`--budget macs`, `--round-to 8`, paper allocation) and a paired timing of the pruned
copy against its parent (`engine.speed.compare_to_parent`: alternate iterations, median; the check
`vss prune` runs), one torch thread.

    python benchmarks/smp_prune_speed.py                          # every architecture, resnet18, 64x128
    python benchmarks/smp_prune_speed.py --archs Unet,FPN --encoder mobilenet_v2 --ratio 0.3
"""

from __future__ import annotations

import argparse
import copy

import torch
from rich.console import Console
from rich.table import Table

from vss_cli.engine.complexity import count_complexity
from vss_cli.engine.speed import TimingSetup, compare_to_parent
from vss_cli.errors import VssError
from vss_cli.models import build_model
from vss_cli.pruning.registry import get_method
from vss_cli.workflows.model_check import check_output, first_line
from vss_cli.workflows.prune import PruneOptions, prune_model

ARCHS = ("Unet", "UnetPlusPlus", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "Linknet", "MAnet", "PAN",
         "UPerNet", "Segformer", "DPT")
NUM_CLASSES = 19


def measure(name: str, size: tuple[int, int], ratio: float, iters: int) -> dict:
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES).eval()
    check_output(model, name, NUM_CLASSES, size)
    parent = copy.deepcopy(model)
    opts = PruneOptions(method="l1", global_ratio=ratio, budget="macs", round_to=8)
    report, _ = prune_model(model, name, get_method("l1"), opts, input_size=size, device="cpu", batch_source=None,
                            fit=None, num_classes=NUM_CLASSES, ignore_index=255,
                            count=lambda m: count_complexity(m, size))
    cmp = compare_to_parent(parent, model, input_size=size, batch=1, device="cpu",
                            setup=TimingSetup(warmup=3, iters=iters))
    return {"macs_before": report.macs_before, "macs_after": report.macs_after, "reduction": report.macs_reduction,
            "parent_ms": cmp.parent_ms, "pruned_ms": cmp.child_ms, "speedup": cmp.speedup, "noisy": cmp.noisy}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--input-size", default="64,128")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--iters", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(1)
    size = tuple(int(v) for v in a.input_size.split(","))
    table = Table(title=f"smp over {a.encoder}, {size[0]}x{size[1]}, l1 at {a.ratio} of MACs (round-to 8), CPU, 1 thread")
    for col in ("model", "MACs before", "MACs after", "reduction", "parent ms", "pruned ms", "speedup", "note"):
        table.add_column(col)
    for arch in a.archs.split(","):
        name = f"smp:{arch}:{a.encoder}"
        try:
            r = measure(name, size, a.ratio, a.iters)
        except (VssError, RuntimeError) as exc:
            table.add_row(name, "", "", "", "", "", "", f"blocked: {first_line(exc)[:120]}")
            continue
        table.add_row(name, f"{r['macs_before'] / 1e6:.1f}M", f"{r['macs_after'] / 1e6:.1f}M", f"{r['reduction']:.3f}",
                      f"{r['parent_ms']:.2f}", f"{r['pruned_ms']:.2f}", f"{r['speedup']:.2f}x",
                      "noisy" if r["noisy"] else "")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
