"""DMCP's Markov gates: each layer's channels in |γ| order cut into width states, the architecture
parameters α of the chain, and the forward hooks that apply them. See `dmcp` for the method."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from vss_cli.pruning.features import channel_outputs
from vss_cli.pruning.surgery import LayerGroup


def leading_rank(group: LayerGroup) -> torch.Tensor:
    """Channel indices from most to least important by |γ| (mean over BNs), filter L1 without BN."""
    if group.bns:
        key = torch.stack([bn.weight.detach().abs().float().cpu() for _, bn in group.bns]).mean(0)
    else:
        key = torch.stack([c.weight.detach().abs().flatten(1).sum(1).float().cpu() for _, c in group.convs]).mean(0)
    return torch.argsort(key, descending=True, stable=True)


def step_bounds(size: int, min_width: float, width_step: float) -> list[int]:
    """Channel counts at the Markov states: min_width, min_width + width_step, ..., 1 of `size`, rounded,
    duplicates merged (a narrow layer has fewer states); starts with 0."""
    states = int(round((1 - min_width) / width_step)) + 1
    widths = {min(size, max(1, int(round((min_width + k * width_step) * size)))) for k in range(states)}
    return [0, *sorted(widths | {size})]


@dataclass
class MarkovGate:
    """One group's ordered channel groups and their architecture parameters α (K − 1 of them)."""

    group: LayerGroup
    rank: torch.Tensor  # channel indices, most important first
    min_width: float = 0.1
    width_step: float = 0.05
    step_of: torch.Tensor = field(init=False)  # [C] channel group of each channel
    step_sizes: torch.Tensor = field(init=False)  # [K] channels per step
    alpha: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        c = self.group.size
        bounds = step_bounds(c, self.min_width, self.width_step)
        k = len(bounds) - 1
        step_by_rank = torch.cat([torch.full((bounds[i + 1] - bounds[i],), i) for i in range(k)])
        self.step_of = torch.empty(c, dtype=torch.long)
        self.step_of[self.rank] = step_by_rank
        self.step_sizes = torch.tensor([float(bounds[i + 1] - bounds[i]) for i in range(k)])
        self.alpha = torch.zeros(k - 1, requires_grad=True)

    @property
    def steps(self) -> int:
        return self.step_sizes.numel()

    def marginals(self) -> torch.Tensor:
        """Marginal keep probability of each step: 1, p_1, p_1·p_2, ... (non-increasing)."""
        return torch.cat([torch.ones(1), torch.cumprod(torch.sigmoid(self.alpha), 0)])

    def expected_width(self) -> torch.Tensor:
        return (self.marginals() * self.step_sizes).sum()

    def arch_mask(self) -> torch.Tensor:
        return self.marginals()[self.step_of]

    def width_mask(self, steps: int) -> torch.Tensor:
        return (self.step_of < steps).float()

    def markov_sample(self, generator: torch.Generator) -> int:
        """Number of kept steps drawn from the chain: keep step k with p_k while step k − 1 is kept."""
        probs = torch.sigmoid(self.alpha.detach())
        draws = torch.rand(probs.numel(), generator=generator)
        kept = 1
        while kept < self.steps and bool(draws[kept - 1] < probs[kept - 1]):
            kept += 1
        return kept

    def set_uniform(self, p: float) -> None:
        with torch.no_grad():
            self.alpha.fill_(math.log(p / (1 - p)))


class GateHooks:
    """Forward hooks scaling each gated group's BN outputs by a per-channel mask (None = untouched)."""

    def __init__(self, gates: list[MarkovGate], device) -> None:
        self.gates = gates
        self.device = device
        self.masks: dict[str, torch.Tensor] = {}

    def pairs(self) -> list[tuple[nn.Module, object]]:
        return [(m, self._hook(g.group.name)) for g in self.gates for m in channel_outputs(g.group)]

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            mask = self.masks.get(name)
            return None if mask is None else output * mask.to(output.dtype).view(1, -1, 1, 1)

        return hook

    def architecture(self) -> None:
        self.masks = {g.group.name: g.arch_mask().to(self.device) for g in self.gates}

    def widths(self, steps: dict[str, int]) -> None:
        self.masks = {g.group.name: g.width_mask(steps[g.group.name]).to(self.device) for g in self.gates}

    def clear(self) -> None:
        self.masks = {}
