"""DMCP's cost model: per-conv MACs measured once, expected MACs as a differentiable function of each
group's kept width (Guo et al., CVPR 2020, §3.3), the FLOPs loss on it, and the final fit of rounded
widths to the target. See `dmcp` for the method."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn as nn

from vss_cli.pruning.planner import round_keep
from vss_cli.pruning.surgery import LayerGroup


class MarkovGate(Protocol):
    """What the fit reads of one of dmcp's gates: its group and the channels of each width step."""

    group: LayerGroup
    step_sizes: torch.Tensor

BAND = 0.05  # the FLOPs loss is zero within [(1 - BAND)·T, T]


def in_inference_graph(group: LayerGroup, table: dict[nn.Module, float]) -> bool:
    return any(conv in table for _, conv in group.convs)


class ExpectedMacs:
    """MACs as a differentiable function of each group's (expected) kept width.

    Convs outside the groups keep their width; a conv's input width drops by what the groups it
    consumes (its in-channel dependencies in the pruning graph) lose.
    """

    def __init__(self, table: dict[nn.Module, float], groups: Sequence[LayerGroup]) -> None:
        convs = list(table)
        index = {g.name: i for i, g in enumerate(groups)}
        producer = {conv: index[g.name] for g in groups for _, conv in g.convs}
        position = {conv: i for i, conv in enumerate(convs)}
        self.sizes = torch.tensor([float(g.size) for g in groups], dtype=torch.float64)
        self.macs = torch.tensor([table[c] for c in convs], dtype=torch.float64)
        self.in_channels = torch.tensor([float(c.in_channels) for c in convs], dtype=torch.float64)
        self.out_index = torch.tensor([producer.get(c, len(groups)) for c in convs], dtype=torch.long)
        self.inputs = torch.zeros(len(convs), len(groups), dtype=torch.float64)
        for g in groups:
            for consumer in {m for _, m in g.consumers if m in position}:
                self.inputs[position[consumer], index[g.name]] += 1.0

    def __call__(self, widths: torch.Tensor) -> torch.Tensor:
        widths = widths.to(torch.float64).cpu()
        out_fraction = torch.cat([widths / self.sizes, torch.ones(1, dtype=torch.float64)])[self.out_index]
        in_fraction = (self.in_channels - self.inputs @ (self.sizes - widths)) / self.in_channels
        return (self.macs * out_fraction * in_fraction).sum()

    @property
    def full(self) -> float:
        return float(self(self.sizes))


def flops_loss(expected: torch.Tensor, target: float, band: float = BAND) -> torch.Tensor:
    """The official `log_l1` FLOPs loss: 0 within [(1 − band)·T, T]; below, log|E − T|; above,
    log|E − (1 − band)·T| (so the pull above T aims into the band). The official factor 0.1 inside the
    log far from T only shifts the loss, not its gradient, and is left out."""
    e = float(expected.detach())
    if (1 - band) * target <= e <= target:
        return expected * 0.0
    aim = target if e < (1 - band) * target else (1 - band) * target
    return torch.log((expected - aim).abs())


@dataclass
class WidthFit:
    widths: dict[str, int]
    macs: float
    scale: float


def snap(gate: MarkovGate, width: float, round_to: int) -> int:
    """Expected width -> kept channels: rounded to `round_to`, at least one step, at most the layer."""
    floor = int(gate.step_sizes[0])
    return min(gate.group.size, round_keep(max(int(round(width)), floor), gate.group.size, round_to, floor))


def widths_at(gates: list[MarkovGate], expected: list[float], scale: float, round_to: int) -> dict[str, int]:
    return {g.group.name: snap(g, scale * w, round_to) for g, w in zip(gates, expected, strict=True)}


def fit_widths(gates: list[MarkovGate], expected: list[float], macs: ExpectedMacs, target: float,
               round_to: int, tolerance: float = BAND) -> WidthFit:
    """Round the expected widths; if the MACs then miss T by more than `tolerance`, scale all of them
    by the common factor whose rounded widths come closest to T."""

    def planned(scale: float) -> tuple[dict[str, int], float]:
        w = widths_at(gates, expected, scale, round_to)
        return w, float(macs(torch.tensor([float(w[g.group.name]) for g in gates])))

    widths, value = planned(1.0)
    if abs(value - target) <= tolerance * target:
        return WidthFit(widths, value, 1.0)
    lo, hi = 0.0, max(g.group.size / max(w, 1e-6) for g, w in zip(gates, expected, strict=True))
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if planned(mid)[1] <= target else (lo, mid)
    best = min((lo, hi), key=lambda s: abs(planned(s)[1] - target))
    widths, value = planned(best)
    return WidthFit(widths, value, best)
