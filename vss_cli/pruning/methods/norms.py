"""Magnitude criteria: l1 (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017) and l2.

A filter's score is the sum of absolute weights (l1) or the L2 norm (l2) of the conv weights that
produce the channel; a group's score is the mean over the convs that produce it.
"""

from __future__ import annotations

import torch

from vss_cli.pruning.base import PruneContext, PruningMethod, mean_over_members, register_method
from vss_cli.pruning.method_options import Scores


def filter_matrix(conv: torch.nn.Conv2d) -> torch.Tensor:
    """Conv weights as one row per output channel."""
    return conv.weight.detach().flatten(1).float()


@register_method
class L1(PruningMethod):
    """Sum of absolute filter weights (Li et al., ICLR 2017)."""

    name = "l1"
    paper_allocation = "uniform"  # Li et al.: the same fraction per layer (plain form)
    paper = "Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017"

    def score(self, ctx: PruneContext) -> Scores:
        return Scores({g.name: mean_over_members([filter_matrix(c).abs().sum(1) for _, c in g.convs])
                       for g in ctx.groups})


@register_method
class L2(PruningMethod):
    """L2 norm of each filter."""

    name = "l2"
    paper_allocation = "uniform"  # as l1
    paper = "Li et al., ICLR 2017 (the L2 variant)"

    def score(self, ctx: PruneContext) -> Scores:
        return Scores({g.name: mean_over_members([filter_matrix(c).norm(dim=1) for _, c in g.convs])
                       for g in ctx.groups})
