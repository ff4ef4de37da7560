"""From per-channel scores to a plan: the global threshold of DESIGN §5.

Scores are normalised per layer (divided by their mean) and ranked across all groups; channels are
taken lowest first until the removed conv channels reach `ratio` of all prunable channels (a group
channel counts once for each conv it removes), with a per-layer cap so no layer is emptied. Kept
widths are then rounded to multiples of `round_to`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from vss_cli.pruning.surgery import LayerGroup

MAX_LAYER_RATIO = 0.9  # at most this fraction of one layer's channels goes


def normalise(scores: torch.Tensor) -> torch.Tensor:
    """Mean normalisation; a layer of all-zero scores stays all zero."""
    s = scores.detach().float().cpu()
    mean = s.abs().mean()
    return s / mean if mean > 0 else s


def min_keep(size: int, round_to: int, max_layer_ratio: float = MAX_LAYER_RATIO) -> int:
    keep = max(1, math.ceil(size * (1 - max_layer_ratio)))
    return min(size, keep)


def round_keep(keep: int, size: int, round_to: int, floor: int) -> int:
    """Round a kept width to the nearest multiple of `round_to`, within [floor, size]."""
    if round_to <= 1 or size <= round_to:
        return max(keep, floor)
    rounded = int(round(keep / round_to)) * round_to
    rounded = max(rounded, math.ceil(floor / round_to) * round_to, round_to)
    return size if rounded >= size else rounded


def global_threshold_plan(groups: Sequence[LayerGroup], scores: dict[str, torch.Tensor], ratio: float, *,
                          round_to: int = 8, normalize: bool = True,
                          max_layer_ratio: float = MAX_LAYER_RATIO) -> dict[str, list[int]]:
    """Indices to remove per group so that about `ratio` of prunable channels go, ranked globally."""
    groups = [g for g in groups if g.name in scores]
    total = sum(g.size * g.weight for g in groups)
    target = ratio * total
    flat = []
    for gi, g in enumerate(groups):
        s = normalise(scores[g.name]) if normalize else scores[g.name].detach().float().cpu()
        if s.numel() != g.size:
            raise ValueError(f"{g.name}: {s.numel()} scores for {g.size} channels")
        for c in range(g.size):
            flat.append((float(s[c]), gi, c))
    flat.sort(key=lambda t: (t[0], t[1], t[2]))
    removed = [0] * len(groups)
    caps = [g.size - min_keep(g.size, round_to, max_layer_ratio) for g in groups]
    done = 0.0
    for _, gi, _c in flat:
        if done >= target:
            break
        if removed[gi] < caps[gi]:
            removed[gi] += 1
            done += groups[gi].weight
    return {g.name: lowest_channels(scores[g.name], g.size - round_keep(
        g.size - removed[gi], g.size, round_to, min_keep(g.size, round_to, max_layer_ratio)))
        for gi, g in enumerate(groups) if removed[gi] > 0}


def lowest_channels(scores: torch.Tensor, n: int) -> list[int]:
    """The `n` lowest-scored channel indices (ties broken by index)."""
    if n <= 0:
        return []
    s = scores.detach().float().cpu()
    order = sorted(range(s.numel()), key=lambda c: (float(s[c]), c))
    return sorted(order[:n])


def plan_from_widths(groups: Sequence[LayerGroup], scores: dict[str, torch.Tensor],
                     keep: dict[str, int]) -> dict[str, list[int]]:
    """Remove the lowest-scored channels of each group down to a given kept width."""
    return {g.name: lowest_channels(scores[g.name], g.size - keep[g.name]) for g in groups
            if g.name in keep and keep[g.name] < g.size}
