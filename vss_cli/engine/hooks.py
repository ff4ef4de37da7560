"""Forward hooks that live only inside a `with` block, and the hooks that observe or capture outputs.

Used by the pruning criteria that read feature maps (and DMCP's gates) and by the per-conv MACs count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn

Hook = Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor | None]


@contextmanager
def forward_hooks(pairs: Sequence[tuple[nn.Module, Hook]]) -> Iterator[None]:
    """Register `(module, hook)` forward hooks for the duration of the block; always removed."""
    handles = [module.register_forward_hook(hook) for module, hook in pairs]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode (BN running statistics untouched); each module's mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """BatchNorm layers normalise with each batch's own statistics (train-mode BN) while their running
    statistics stay untouched (momentum 0, counters restored); every other module stays as it is."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.training, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in bns]
    for m in bns:
        m.train()
        m.momentum = 0.0
    try:
        yield model
    finally:
        for m, training, momentum, tracked in saved:
            m.training, m.momentum = training, momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def observer_hook(sink: Callable[[torch.Tensor], None]) -> Hook:
    """A hook handing the module output to `sink` at once (before an in-place activation changes it)."""

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        sink(output.detach())

    return hook


def capture_hook(store: list[torch.Tensor]) -> Hook:
    """A hook that keeps the module output in the autograd graph and appends it to `store`.

    The module returns a copy, so an in-place activation after it (ReLU(inplace=True)) changes the
    copy, and the stored tensor stays the pre-activation feature that gradients are taken against.
    """

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        store.append(output)
        return output.clone()

    return hook
