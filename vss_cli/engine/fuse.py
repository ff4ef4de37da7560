"""Conv-BN folding: the model as it is deployed, with every BatchNorm that directly follows a conv
merged into that conv's weights and bias.

Pairs come from the traced graph (Torch-Pruning's dependency graph, as pruning traces it), not from
module order: a BatchNorm2d is folded only when its one input is a Conv2d whose output feeds nothing
else, so residual additions, U-Net skip concatenations, ASPP branches and SegNet unpooling keep their
meaning. This works the same on a freshly built model and on a pruned one rebuilt by replaying its
Torch-Pruning history. Folding uses the BN's running statistics, so it is only defined in eval mode.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


@dataclass(frozen=True)
class FoldResult:
    """The folded model and the (conv, bn) module names that were merged."""

    model: nn.Module
    pairs: tuple[tuple[str, str], ...]


def _traced(model: nn.Module, size: tuple[int, int]):
    """Torch-Pruning's traced module graph of `model` in eval mode (its modes restored after)."""
    import torch_pruning as tp

    modes = {m: m.training for m in model.modules()}
    example = torch.zeros(1, 3, *size, device=next(model.parameters()).device)
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model.eval(), example_inputs=example, verbose=False,
                output_transform=lambda out: sum(v.sum() for v in out.values()) if isinstance(out, dict) else out.sum())
    finally:
        for m, training in modes.items():
            m.training = training


def conv_bn_pairs(model: nn.Module, size: tuple[int, int] = (64, 64)) -> list[tuple[str, str]]:
    """(conv name, bn name) for every BatchNorm2d fed only by a Conv2d that feeds only it."""
    names = {m: n for n, m in model.named_modules()}
    dg = _traced(model, size)
    pairs = []
    for module, node in dg.module2node.items():
        if not isinstance(module, nn.BatchNorm2d) or len(node.inputs) != 1:
            continue
        src = node.inputs[0]
        if isinstance(src.module, nn.Conv2d) and len(src.outputs) == 1 and module in names and src.module in names:
            pairs.append((names[src.module], names[module]))
    return sorted(pairs)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def fold_conv_bn(model: nn.Module, size: tuple[int, int] = (64, 64), *, inplace: bool = False) -> FoldResult:
    """A copy of `model` (eval mode) with every conv-BN pair folded; BN modules become Identity.

    A conv used more than once in the forward pass is left alone (its one BN would not apply to all uses).
    """
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    pairs = conv_bn_pairs(target, size)
    modules = dict(target.named_modules())
    for conv_name, bn_name in pairs:
        with torch.no_grad():
            fused = fuse_conv_bn_eval(modules[conv_name], modules[bn_name])
        _set_module(target, conv_name, fused)
        _set_module(target, bn_name, nn.Identity())
    return FoldResult(model=target, pairs=tuple(pairs))
