"""From per-channel scores to a plan: the global threshold of DESIGN §5.

Scores are normalised per layer (divided by their mean) and ranked across all groups; channels are
taken lowest first until the removed conv channels reach `ratio` of all prunable channels (a group
channel counts once for each conv it removes), with a per-layer cap so no layer is emptied. Kept
widths are multiples of `round_to`: channels leave a layer in blocks that keep it so, and blocks
compete globally on their mean score (so rounding never silently halves a narrow layer).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

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


@dataclass(order=True)
class _Block:
    """The next `size` channels a group would lose, ranked by their mean normalised score."""

    score: float
    group: int
    size: int = field(compare=False)


def _removable_blocks(size: int, floor: int, round_to: int) -> list[int]:
    """Block sizes a group can lose in order, so that every kept width is a multiple of `round_to`
    (the first block takes the remainder of a width that is not one), never going below `floor`."""
    step = max(1, round_to)
    floor = min(size, max(floor, step) if size > step else size)
    floor = math.ceil(floor / step) * step if size > step else floor
    blocks, kept = [], size
    first = kept % step or step
    while kept - first >= floor and first > 0:
        blocks.append(first)
        kept -= first
        first = step
    return blocks


def global_threshold_plan(groups: Sequence[LayerGroup], scores: dict[str, torch.Tensor], ratio: float, *,
                          round_to: int = 8, normalize: bool = True,
                          max_layer_ratio: float = MAX_LAYER_RATIO) -> dict[str, list[int]]:
    """Indices to remove per group so that about `ratio` of prunable channels go, ranked globally.

    Channels leave each group in blocks that keep its width a multiple of `round_to` (blocks of one
    channel with `round_to=1`); blocks are taken across groups in order of their mean normalised
    score, each only while it brings the removed channel count closer to the target.
    """
    groups = [g for g in groups if g.name in scores]
    target = ratio * sum(g.size * g.weight for g in groups)
    ordered = []
    for g in groups:
        s = normalise(scores[g.name]) if normalize else scores[g.name].detach().float().cpu()
        if s.numel() != g.size:
            raise ValueError(f"{g.name}: {s.numel()} scores for {g.size} channels")
        ordered.append(sorted(s.tolist()))
    plans = [_removable_blocks(g.size, min_keep(g.size, round_to, max_layer_ratio), round_to) for g in groups]
    taken = [0] * len(groups)  # blocks taken per group
    removed = [0] * len(groups)  # channels removed per group

    def next_block(gi: int) -> _Block | None:
        if taken[gi] >= len(plans[gi]):
            return None
        size = plans[gi][taken[gi]]
        chunk = ordered[gi][removed[gi]:removed[gi] + size]
        return _Block(sum(chunk) / len(chunk), gi, size)

    heap = [b for gi in range(len(groups)) if (b := next_block(gi)) is not None]
    heapq.heapify(heap)
    done = 0.0
    while heap and done < target:
        block = heapq.heappop(heap)
        cost = block.size * groups[block.group].weight
        if done + cost - target > target - done:  # overshoots more than it helps: this group is done
            continue
        done += cost
        taken[block.group] += 1
        removed[block.group] += block.size
        if (nxt := next_block(block.group)) is not None:
            heapq.heappush(heap, nxt)
    return {g.name: lowest_channels(scores[g.name], removed[gi]) for gi, g in enumerate(groups) if removed[gi]}


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
