"""`random`: uniform random channel scores, the lower bound every criterion has to beat.

Scores are drawn from a `torch.Generator` seeded with the run's seed, one group after another in the
order of `ctx.groups`, so a seed always gives the same plan and different seeds give different ones.
"""

from __future__ import annotations

import torch

from vss_cli.pruning.base import PruneContext, PruningMethod, register_method
from vss_cli.pruning.method_options import Scores


@register_method
class RandomScores(PruningMethod):
    """Uniform random scores in [0, 1) per channel, deterministic per `ctx.seed`; no options."""

    name = "random"
    paper_allocation = "uniform"  # isolates which channels from how many per layer
    paper = "the lower bound: uniform random scores, seeded"
    scores_need = "seed"

    def score(self, ctx: PruneContext) -> Scores:
        generator = torch.Generator().manual_seed(int(ctx.seed))
        return Scores({g.name: torch.rand(g.size, generator=generator) for g in ctx.groups})
