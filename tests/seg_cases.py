"""Shared cases of the segmentation-criteria tests (test_methods_seg.py, test_methods_dmcp.py): tiny
models with distinct |γ|, synthetic batches and a short fit, and a prune through `prune_model`."""

from __future__ import annotations

import torch
import torch.nn as nn

from vss_cli.data import build_dataset, build_loader, get_spec
from vss_cli.engine.complexity import count_complexity
from vss_cli.engine.train import TrainConfig
from vss_cli.engine.train import fit as engine_fit
from vss_cli.models import build_model, get_model_info
from vss_cli.pruning.registry import get_method
from vss_cli.pruning.surgery import LayerGroup, build_graph, collect_groups
from vss_cli.workflows.prune import PruneOptions, prune_model

torch.set_num_threads(1)
SIZE = (32, 48)
CLASSES = get_spec("synthetic").num_classes




def groups_of(model: nn.Module, ignored: list[nn.Module], size: tuple[int, int] = (64, 64)) -> list[LayerGroup]:
    return collect_groups(model, build_graph(model, ignored, size=size), ignored)


def synthetic_batches(n: int = 8, batch: int = 4):
    ds = build_dataset("synthetic", "train", input_size=SIZE)

    def batches():
        for start in range(0, n, batch):
            items = [ds[i] for i in range(start, start + batch)]
            yield torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    return batches


def synthetic_fit(iters: int = 4):
    """A `fit(model, hooks, epochs, ...)` on the synthetic training split, `iters` steps per epoch."""
    loader = build_loader(build_dataset("synthetic", "train", input_size=SIZE, train=True), batch_size=4, train=True)

    def run(model, hooks, epochs, lr=None, optimizer=None, max_iters=None):
        cfg = TrainConfig(epochs=epochs, lr=lr or 0.01, max_iters_per_epoch=max_iters or iters)
        return engine_fit(model, loader, None, cfg, num_classes=CLASSES, hooks=hooks, optimizer=optimizer,
                          show_progress=False)

    return run


def tiny_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, CLASSES, **get_model_info(name).tiny_kwargs)
    for m in model.modules():  # distinct |γ| and non-trivial statistics
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.2, 1.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def run_prune(name: str, method: str, ratio: float = 0.3, **options):
    model = tiny_model(name)
    report, _ = prune_model(
        model, name, get_method(method, **options),
        PruneOptions(ckpt="-", method=method, global_ratio=ratio, method_options=options),
        input_size=SIZE, device="cpu", batch_source=synthetic_batches(), fit=synthetic_fit(),
        num_classes=CLASSES, ignore_index=255, count=lambda m: count_complexity(m, SIZE),
    )
    return model, report


