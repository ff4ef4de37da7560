"""Re-run a network only from a layer upward: the oracle's cache of everything that does not depend on it.

One forward (`trace_calls`) marks the ablated layer's outputs as the only tensors that require grad
(parameters are untracked for its duration), so autograd tells which modules see a tensor derived
from the layer. Every module that runs exactly once and never does (everything below the layer, and
side branches above it such as a residual shortcut or another ASPP branch) computes the same output
whatever the layer's channels; the outermost such modules form the layer's `frozen` set. `ReplayCache` captures their outputs once per minibatch (cloned, so an in-place
activation later in the graph cannot change them) and, while active, replaces each frozen module's
`forward` with a lookup that returns its cached output tiled `k` times along the batch: the rest of
the network (the parents' glue code, everything at and above the layer) runs on `k` stacked copies
of the minibatch, one per ablated channel. Modules called several times per forward (a ResNet
block's shared ReLU) are never frozen, so the replayed forward computes exactly what the plain one
does. Works on any eager `nn.Module` whose forward is deterministic in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn as nn


@dataclass
class CallTrace:
    """Per module of one forward: how often it ran, and whether it saw a tensor derived from the layer."""

    calls: dict[nn.Module, int] = field(default_factory=dict)
    dependent: set[nn.Module] = field(default_factory=set)


def _any_tracked(obj) -> bool:
    found = []
    map_tensors(obj, lambda t: found.append(bool(t.requires_grad)) or t)
    return any(found)


@contextmanager
def _parameters_untracked(model: nn.Module) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def trace_calls(model: nn.Module, images: torch.Tensor, layer: Sequence[nn.Module]) -> CallTrace:
    """Run `model(images)` once, using autograd as a dependency tracker: the outputs of `layer` are the
    only tensors that require grad, so a module whose inputs and outputs do not is independent of it."""
    trace = CallTrace()

    def seen(module, args, kwargs, output):
        trace.calls[module] = trace.calls.get(module, 0) + 1
        if _any_tracked(args) or _any_tracked(kwargs) or _any_tracked(output):
            trace.dependent.add(module)

    def track(_module, _inputs, output):
        return output.detach().requires_grad_().clone()

    handles = [m.register_forward_hook(track) for m in layer]
    handles += [m.register_forward_hook(seen, with_kwargs=True) for m in model.modules()]
    try:
        with torch.inference_mode(False), _parameters_untracked(model), torch.enable_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    return trace


def frozen_modules(model: nn.Module, trace: CallTrace) -> list[nn.Module]:
    """The outermost modules that run once per forward and never see a tensor derived from the layer."""

    def frozen(m: nn.Module) -> bool:
        return trace.calls.get(m) == 1 and m not in trace.dependent

    found: list[nn.Module] = []

    def walk(module: nn.Module) -> None:
        for child in module.children():
            if frozen(child):
                found.append(child)
            else:
                walk(child)

    if not frozen(model):
        walk(model)
    return list(dict.fromkeys(found))


def map_tensors(obj, fn: Callable[[torch.Tensor], torch.Tensor]):
    """`fn` applied to every tensor in a (nested) tuple / list / dict output; other leaves unchanged."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return type(obj)((k, map_tensors(v, fn)) for k, v in obj.items())
    if isinstance(obj, (tuple, list)):
        mapped = [map_tensors(v, fn) for v in obj]
        return type(obj)(*mapped) if hasattr(obj, "_fields") else type(obj)(mapped)
    return obj


def tile(tensor: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """`k` copies stacked along the batch (copy j = rows j·batch … (j+1)·batch − 1); others as they are."""
    if k == 1 or tensor.dim() == 0 or tensor.shape[0] != batch:
        return tensor.clone()
    return tensor.repeat(k, *([1] * (tensor.dim() - 1)))


class ReplayCache:
    """Cached outputs of a layer's frozen modules for one minibatch, and the patched forward that replays them."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)
        self.outputs: dict[nn.Module, object] = {}
        self.batch = 0

    @torch.no_grad()
    def capture(self, model: nn.Module, images: torch.Tensor) -> None:
        """One plain forward of `images` keeping a copy of every frozen module's output."""
        self.outputs, self.batch = {}, images.shape[0]

        def keep(module, _inputs, output):
            self.outputs[module] = map_tensors(output, lambda t: t.detach().clone())

        handles = [m.register_forward_hook(keep) for m in self.modules]
        try:
            model(images)
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def replaying(self, copies: Callable[[], int]) -> Iterator[None]:
        """Inside the block each frozen module returns its cached output tiled `copies()` times."""
        saved = {m: m.__dict__.get("forward") for m in self.modules}
        for module in self.modules:
            module.forward = self._lookup(module, copies)
        try:
            yield
        finally:
            for module, previous in saved.items():
                del module.forward
                if previous is not None:
                    module.forward = previous

    def _lookup(self, module: nn.Module, copies: Callable[[], int]):
        def forward(*_args, **_kwargs):
            return map_tensors(self.outputs[module], lambda t: tile(t, copies(), self.batch))

        return forward
