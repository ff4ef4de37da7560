"""Overhead of eval's metric pass: `engine.train.evaluate` against a bare loop of forwards.

Both loops see the same pre-built batches (already on the device) and the same model, so the
difference is what evaluation adds per batch: argmax, the confusion-matrix `bincount`, the progress
bar. Runs alternate (bare, evaluate, bare, ...) and the median of `--repeats` runs is reported.
Target: evaluate ≥ 0.9× the bare loop's images/s.

    python benchmarks/eval_overhead.py [--device cpu|cuda] [--models unet,deeplabv3_resnet50] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from vss_cli.data import get_spec
from vss_cli.engine.train import evaluate
from vss_cli.models import build_model, get_model_info


def make_batches(n_batches: int, batch: int, size: tuple[int, int], num_classes: int, device) -> list:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n_batches):
        x = torch.randn(batch, 3, *size, generator=g)
        y = torch.randint(0, num_classes, (batch, *size), generator=g)
        y[:, :2] = 255  # a few ignore pixels, as real labels have
        out.append((x.to(device), y.to(device)))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def bare_loop(model, batches, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for images, _ in batches:
        model(images)["out"]
    sync(device)
    return time.perf_counter() - t0


def eval_loop(model, batches, device, num_classes: int) -> float:
    sync(device)
    t0 = time.perf_counter()
    evaluate(model, batches, num_classes, 255, device, progress=False)
    sync(device)
    return time.perf_counter() - t0


def measure(name: str, kwargs: dict, size, batch: int, n_batches: int, repeats: int, device) -> dict:
    num_classes = get_spec("synthetic").num_classes
    torch.manual_seed(0)
    model = build_model(name, num_classes, **kwargs).to(device).eval()
    batches = make_batches(n_batches, batch, size, num_classes, device)
    bare_loop(model, batches[:2], device)  # warm-up (cudnn autotune, allocator)
    eval_loop(model, batches[:2], device, num_classes)
    bare, ev = [], []
    for _ in range(repeats):
        bare.append(bare_loop(model, batches, device))
        ev.append(eval_loop(model, batches, device, num_classes))
    images = n_batches * batch
    bare_ips, eval_ips = images / statistics.median(bare), images / statistics.median(ev)
    return {"model": name + (" (tiny)" if kwargs else ""), "input": f"{size[0]}x{size[1]}", "batch": batch,
            "images": images, "bare img/s": bare_ips, "evaluate img/s": eval_ips, "ratio": eval_ips / bare_ips}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default="unet,deeplabv3_resnet50")
    p.add_argument("--tiny", action="store_true", help="tiny widths (CPU smoke runs)")
    p.add_argument("--size", default=None, help="H,W (default: 64,96 tiny, 512,1024 otherwise)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    os.environ.setdefault("VSS_QUIET", "1")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    size = tuple(int(s) for s in a.size.split(",")) if a.size else ((64, 96) if a.tiny else (512, 1024))
    rows = [measure(name, get_model_info(name).tiny_kwargs if a.tiny else {}, size, a.batch, a.batches, a.repeats,
                    device) for name in a.models.split(",")]
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {dev}")
    cols = list(rows[0])
    print(" | ".join(f"{c:>15}" for c in cols))
    for r in rows:
        print(" | ".join(f"{v:>15.3f}" if isinstance(v, float) else f"{v!s:>15}" for v in r.values()))


if __name__ == "__main__":
    main()
