"""What does `vss eval --oracle-samples` cost? The old oracle (one full forward per channel) against the
cached, batched one (`vss_cli.pruning.oracle.oracle_importance`), on the same channels and images.

The old implementation lives only here, as the reference: every channel of every chosen group is
zeroed in turn and the whole network (aux head included, as it ran) recomputes the loss. The new one
runs the inference graph once per minibatch below each layer, caches it, and replays only what lies
above, several channels per forward. The table shows both times, the speedup, the largest difference
of the importances (they must agree to 1e-5) and the MACs ratio: Σ channels × MACs of the old forward
over Σ channels × MACs of what still runs above each layer, i.e. what skipping alone saves in
arithmetic. Measured speedups beyond it come from batching the copies: fewer module calls per channel
(per-call overhead dominates tiny widths) and, on a GPU or many threads, more work per kernel.

    python benchmarks/oracle_cost.py                                   # deeplabv3_resnet50, width 0.25
    python benchmarks/oracle_cost.py --models deeplabv3_resnet50,unet --samples 8 --input-size 64,128
    python benchmarks/oracle_cost.py --aux-loss                        # a baseline trained with --aux-loss

Weights are random but BN statistics are varied so that channels differ; one torch thread (`--threads`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from vss_cli.engine.complexity import inference_graph
from vss_cli.engine.macs import CONVS, conv_macs
from vss_cli.models import build_model
from vss_cli.pruning.oracle import bn_of_group, choose_groups, oracle_importance
from vss_cli.pruning.oracle_replay import frozen_modules, trace_calls
from vss_cli.pruning.surgery import LayerGroup, build_graph, collect_groups, output_layers_of

NUM_CLASSES = 8


# ----------------------------------------------------------------------------------------------
# the oracle as it was before (reference only; not part of vss)


def _old_mean_loss(model, batches, ignore_index: int) -> float:
    total, pixels = 0.0, 0
    for images, labels in batches:
        logits = model(images)["out"]
        total += float(F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum"))
        pixels += int((labels != ignore_index).sum())
    return total / max(pixels, 1)


@torch.no_grad()
def old_oracle_importance(model: nn.Module, groups: Sequence[LayerGroup], batches, ignore_index: int = 255) -> dict:
    """One channel at a time, full network each time: (1 + Σ channels) × batches forwards."""
    model.eval()
    base = _old_mean_loss(model, batches, ignore_index)
    importance = {}
    for group in groups:
        bns = bn_of_group(group)
        mask = torch.ones(1, group.size, 1, 1, device=batches[0][0].device)
        hooks = [bn.register_forward_hook(lambda _m, _i, out, mask=mask: out * mask) for bn in bns]
        increase = torch.empty(group.size, dtype=torch.float64)
        for c in range(group.size):
            mask.fill_(1.0)
            mask[0, c] = 0.0
            increase[c] = _old_mean_loss(model, batches, ignore_index) - base
        for h in hooks:
            h.remove()
        importance[group.name] = increase
    return importance


# ----------------------------------------------------------------------------------------------


@dataclass
class Row:
    model: str
    layers: str
    channels: int
    old_s: float
    new_s: float
    max_diff: float
    bound: float


@torch.no_grad()
def conv_macs_of(model: nn.Module, images: torch.Tensor) -> dict[nn.Module, float]:
    table: dict[nn.Module, float] = {}

    def record(module, inputs, output):
        table[module] = table.get(module, 0.0) + conv_macs(module, inputs, output)

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, CONVS)]
    model(images)
    for h in handles:
        h.remove()
    return table


def macs_bound(model: nn.Module, groups: Sequence[LayerGroup], images: torch.Tensor) -> float:
    """Σ C · MACs(old forward) / Σ C · MACs(what the new oracle re-runs above each layer)."""
    full = sum(conv_macs_of(model.eval(), images).values())
    old = new = 0.0
    with inference_graph(model) as net:
        table = conv_macs_of(net, images)
        for g in groups:
            frozen = {m for f in frozen_modules(net, trace_calls(net, images, bn_of_group(g))) for m in f.modules()}
            old += g.size * full
            new += g.size * sum(v for m, v in table.items() if m not in frozen)
    return old / new if new else float("inf")


def setup(name: str, width: float, size: tuple[int, int], samples: int, batch: int, layers: int, device,
          aux: bool = False):
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES, width=width, **({"aux_loss": True} if aux else {})).to(device).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.2, 1.5)
    ignored = output_layers_of(model, name)
    groups = choose_groups(collect_groups(model, build_graph(model, ignored, size=size), ignored), layers)
    g = torch.Generator().manual_seed(0)
    batches = []
    for start in range(0, samples, batch):
        n = min(batch, samples - start)
        x = torch.randn(n, 3, *size, generator=g)
        y = torch.randint(0, NUM_CLASSES, (n, *size), generator=g)
        batches.append((x.to(device), y.to(device)))
    return model, groups, batches


def measure(name: str, args, device) -> Row:
    model, groups, batches = setup(name, args.width, args.input_size, args.samples, args.batch_size, args.layers,
                                   device, aux=args.aux_loss)
    t0 = time.perf_counter()
    old = old_oracle_importance(model, groups, batches)
    t1 = time.perf_counter()
    new = oracle_importance(model, groups, batches, channels_per_pass=args.channels_per_pass).importance
    t2 = time.perf_counter()
    diff = max(float((old[k] - new[k]).abs().max()) for k in old)
    return Row(model=name, layers=str(len(groups)), channels=sum(g.size for g in groups),
               old_s=t1 - t0, new_s=t2 - t1, max_diff=diff, bound=macs_bound(model, groups, batches[0][0][:1]))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="deeplabv3_resnet50")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--input-size", default="64,128", type=lambda s: tuple(int(v) for v in s.split(",")))
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--channels-per-pass", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--aux-loss", action="store_true", help="models with their aux head (the old oracle ran it)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [measure(name, args, device) for name in args.models.split(",")]
    table = Table(title=f"oracle cost: {args.samples} images at {args.input_size}, width {args.width}, "
                        f"{args.channels_per_pass} channels per pass, {args.threads} thread(s), {device}")
    for col in ("model", "layers", "channels", "old s", "new s", "speedup", "MACs ratio", "max |Δ importance|"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.model, r.layers, str(r.channels), f"{r.old_s:.2f}", f"{r.new_s:.2f}",
                      f"{r.old_s / r.new_s:.2f}x", f"{r.bound:.2f}x", f"{r.max_diff:.1e}")
    Console().print(table)


if __name__ == "__main__":
    main()
