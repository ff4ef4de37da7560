"""`taylor`: first-order Taylor importance (Molchanov et al., "Importance Estimation for Neural Network
Pruning", CVPR 2019), the BN-γ variant the paper uses for its ResNet results.

The importance of channel c is the squared first-order estimate of the loss change when the channel
is removed, computed on the BatchNorm that follows its conv:
    I_c = (γ_c·∂L/∂γ_c + β_c·∂L/∂β_c)²
per minibatch of the training split (cross-entropy on the "out" logits with the dataset's ignore index;
an auxiliary head is ignored), averaged over the minibatches of `--samples` images (paper: the
importance is accumulated over minibatches and averaged). A group's score is the mean over its BN
members. Channels the main output does not depend on (an auxiliary head's) get 0: removing them
does not change that loss.

A group with no BatchNorm is scored with the same formula on the parameters of its conv filters,
I_c = (Σ w·∂L/∂w + b·∂L/∂b)² over filter c: since the conv output is linear in them this equals
(Σ z_c·∂L/∂z_c)², the paper's activation (feature × gradient) form on the conv output. It is used only
where no γ exists, never as a silent substitute.

Scoring runs the model in eval mode, so BatchNorm running statistics are untouched; gradients are
taken only for the parameters the criterion needs, and every parameter's `.grad` and `requires_grad`
are restored afterwards. Torch-Pruning 1.6.1's `TaylorImportance` skips BN layers, so it is not used.

Coupled channels (`group`). A residual stream couples one channel across several BNs (the
downsample BN and every block's last BN of a stage). `group=mean` (METHODS.md's default for every
criterion): the mean over the members of each member's squared term. `group=gate`: the paper's code
(NVlabs/Taylor_pruning) puts one multiplicative gate on the channel and squares its first-order
term; a gate g multiplying every member's output has ∂L/∂g = Σ_members (γ·∂L/∂γ + β·∂L/∂β) at g = 1,
so the importance is the square of the summed contribution, (Σ_i γ_i·∂L/∂γ_i + β_i·∂L/∂β_i)², per
minibatch and then averaged. The two agree on groups with one BN.

Options: `group` = mean (see above).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from vss_cli.engine.hooks import eval_mode
from vss_cli.errors import ConfigError
from vss_cli.pruning.base import PruneContext, PruningMethod, mean_over_members, register_method
from vss_cli.pruning.features import scoring_batches
from vss_cli.pruning.method_options import MethodOptions, MethodReport, Scores, option
from vss_cli.pruning.surgery import LayerGroup


@contextmanager
def gradients_only_for(model: nn.Module, wanted: list[nn.Parameter]) -> Iterator[None]:
    """Eval mode and gradients for `wanted` only; restores mode, `.grad` and `requires_grad` on exit."""
    params = list(model.parameters())
    saved = [(p, p.grad, p.requires_grad) for p in params]
    wanted_ids = {id(p) for p in wanted}
    for p in params:
        p.grad = None
        p.requires_grad_(id(p) in wanted_ids)
    try:
        with eval_mode(model):
            yield
    finally:
        for p, grad, requires_grad in saved:
            p.grad = grad
            p.requires_grad_(requires_grad)


def weight_times_grad(param: nn.Parameter | None) -> torch.Tensor | float:
    """param·∂L/∂param summed per output channel; 0 where the loss does not reach the parameter."""
    if param is None or param.grad is None:
        return 0.0
    return (param.detach() * param.grad).flatten(1).sum(1) if param.ndim > 1 else param.detach() * param.grad


def first_order(layer: nn.Module) -> torch.Tensor:
    """γ·∂L/∂γ + β·∂L/∂β for a BN, Σ w·∂L/∂w + b·∂L/∂b per filter for a conv (before squaring)."""
    term = weight_times_grad(layer.weight) + weight_times_grad(layer.bias)
    if not torch.is_tensor(term):
        term = torch.full((layer.weight.shape[0],), float(term), device=layer.weight.device)
    return term.float()


def taylor_term(layer: nn.Module) -> torch.Tensor:
    """(γ·∂L/∂γ + β·∂L/∂β)² for a BN, (Σ w·∂L/∂w + b·∂L/∂b)² per filter for a conv."""
    return first_order(layer).pow(2)


def _bn_layers(group: LayerGroup) -> list[nn.Module]:
    return [bn for _, bn in group.bns if bn.weight is not None]


def scored_layers(groups: list[LayerGroup]) -> dict[str, list[nn.Module]]:
    """Per group, the layers whose parameters are differentiated: its BNs, else its convs."""
    return {g.name: _bn_layers(g) or [c for _, c in g.convs] for g in groups}


def group_importance(layers: list[nn.Module], group: str = "mean") -> torch.Tensor:
    """mean: the members' squared terms averaged; gate: the square of their summed first-order terms."""
    if group == "gate":
        return torch.stack([first_order(m) for m in layers]).sum(0).pow(2)
    return mean_over_members([taylor_term(m) for m in layers])


def minibatch_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Cross-entropy of the main output only (the auxiliary head does not take part)."""
    return F.cross_entropy(model(images)["out"], labels, ignore_index=ignore_index)


@dataclass(frozen=True)
class TaylorOptions(MethodOptions):
    group: str = option("mean", "coupled channels: mean of the members' squares, or gate = square of their "
                        "summed first-order term (NVlabs' gate)", choices=("mean", "gate"))


@dataclass
class TaylorReport(MethodReport):
    taylor_minibatches: int = 0
    taylor_group: str = "mean"


@register_method
class Taylor(PruningMethod):
    """(γ·∂L/∂γ + β·∂L/∂β)² averaged over minibatches (Molchanov et al., CVPR 2019)."""

    name = "taylor"
    paper_allocation = "global_raw"  # Molchanov 2019 ranks the raw criterion across layers
    paper = "Molchanov et al., Importance Estimation for Neural Network Pruning, CVPR 2019 (NVlabs/Taylor_pruning)"
    scores_need = "data, gradients"
    needs_data = True
    Options = TaylorOptions

    def score(self, ctx: PruneContext) -> Scores:
        layers = scored_layers(ctx.groups)
        wanted = [p for ms in layers.values() for m in ms for p in m.parameters(recurse=False)]
        totals: dict[str, torch.Tensor] = {}
        minibatches = 0
        with gradients_only_for(ctx.model, wanted):
            for images, labels in scoring_batches(ctx, "taylor"):
                if not bool((labels != ctx.ignore_index).any()):
                    continue  # an all-void minibatch has no loss to differentiate
                for p in wanted:
                    p.grad = None
                minibatch_loss(ctx.model, images, labels, ctx.ignore_index).backward()
                for name, ms in layers.items():
                    imp = group_importance(ms, self.config.group).cpu()
                    totals[name] = totals[name] + imp if name in totals else imp
                minibatches += 1
        if minibatches == 0:
            raise ConfigError("taylor found no labelled pixels in the scoring images: pass more --samples")
        return Scores({name: total / minibatches for name, total in totals.items()},
                      TaylorReport(minibatches, self.config.group))
