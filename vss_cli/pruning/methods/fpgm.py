"""`fpgm`: Filter Pruning via Geometric Median (He et al., "Filter Pruning via Geometric Median for
Deep Convolutional Neural Networks Acceleration", CVPR 2019).

Filters near the geometric median of their layer are the ones the others can stand in for, so they
go first. As in the paper, the geometric median is not computed: a filter's score is the sum of its
distances to every other filter of the same conv, which is smallest for the filter closest to the
median. A group's score is the mean of its conv members' scores.

Options: `p` = 2.0, the order of the Minkowski distance between flattened filters (the paper uses the
Euclidean distance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vss_cli.errors import ConfigError
from vss_cli.pruning.base import PruneContext, PruningMethod, mean_over_members, register_method
from vss_cli.pruning.method_options import MethodOptions, Scores, option
from vss_cli.pruning.methods.norms import filter_matrix


def distance_sums(filters: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Row i: the sum of distances from filter i to all filters (its own distance is 0)."""
    return torch.cdist(filters.unsqueeze(0), filters.unsqueeze(0), p=p).squeeze(0).sum(1)


@dataclass(frozen=True)
class FPGMOptions(MethodOptions):
    p: float = option(2.0, "order of the Minkowski distance between flattened filters (paper: 2, Euclidean)")

    def check(self) -> None:
        if self.p <= 0:
            raise ConfigError(f"fpgm: p {self.p} must be positive (paper: 2)")


@register_method
class FPGM(PruningMethod):
    """Sum of distances to the layer's other filters (He et al., CVPR 2019); small = redundant."""

    name = "fpgm"
    paper_allocation = "uniform"  # the official `distance_rate`: one rate per layer
    paper = "He et al., Filter Pruning via Geometric Median, CVPR 2019 (he-y/filter-pruning-geometric-median)"
    Options = FPGMOptions

    def score(self, ctx: PruneContext) -> Scores:
        p = self.config.p
        return Scores({g.name: mean_over_members([distance_sums(filter_matrix(c), p) for _, c in g.convs])
                       for g in ctx.groups})
