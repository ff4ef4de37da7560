"""Forward-hook helpers shared by the feature-based criteria (sirfp, fgp) and DMCP's gates.

A group's channels are observed where its BatchNorm layers output them (post-BN, pre-activation);
a group without BatchNorm is observed at its convs' outputs. Hooks live only inside a `with` block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn

from vss_cli.engine.progress import progress_bar
from vss_cli.pruning.surgery import LayerGroup

Hook = Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor | None]


def channel_outputs(group: LayerGroup) -> list[nn.Module]:
    """The modules whose outputs carry the group's channels: its BNs, else its convs."""
    return [m for _, m in group.bns] or [m for _, m in group.convs]


def scoring_batches(ctx, what: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`ctx.batches()` with a progress bar (images scored of `ctx.samples`, with ETA) for a scoring pass."""
    with progress_bar(f"{what}: scoring", total=ctx.samples) as update:
        for images, labels in ctx.batches():
            yield images, labels
            update(advance=len(images))


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
