"""A latency budget: a per-layer latency table and a knapsack over layers (HALP, Shen et al., NeurIPS 2022).

The table gives, for every prunable group, the time of the convs its width touches (its own convs'
outputs and its consumers' inputs) as a function of the group's kept width, in steps of the rounding
unit, each conv timed standalone with the shape it has in the network (identical shapes are timed
once). The knapsack then removes channels where they buy the most latency per unit of lost importance:
from full width, each group's next move is the jump to a cheaper table width with the lowest ratio of
importance lost (sum of its normalised scores) to time saved, and moves are taken lowest ratio first
until the requested saving is reached. `--round-to auto` keeps per group only the table's fast widths:
those faster than every wider one. Everything here is a function of groups, scores and tables, so it
is tested without a store; caching and calibration against measured latency live in the workflow.
"""

from __future__ import annotations

import heapq
import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn

from vss_cli.engine.complexity import inference_graph
from vss_cli.pruning.planner import MAX_LAYER_RATIO, min_keep, normalise
from vss_cli.pruning.surgery import LayerGroup

MAX_POINTS = 16  # table widths measured per group (evenly spread multiples of the unit, full width always)
AUTO_UNIT = 8  # `--round-to auto`: widths are measured in steps of 8 (of 1 in layers narrower than 4 × 8)


@dataclass(frozen=True)
class ConvCall:
    """One conv as it runs in the network: what its time depends on."""

    in_ch: int
    out_ch: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    height: int
    width: int
    transposed: bool = False  # a ConvTranspose2d (U-Net's up-convs)

    def key(self) -> str:
        return (f"{'t' if self.transposed else ''}{self.in_ch}x{self.out_ch}k{self.kernel}s{self.stride}"
                f"p{self.padding}d{self.dilation}@{self.height}x{self.width}")

    def module(self) -> nn.Module:
        cls = nn.ConvTranspose2d if self.transposed else nn.Conv2d
        return cls(self.in_ch, self.out_ch, self.kernel, self.stride, self.padding, dilation=self.dilation)


def conv_calls(model: nn.Module, input_size: tuple[int, int]) -> dict[str, ConvCall]:
    """Every (non-grouped) Conv2d / ConvTranspose2d the inference graph calls, with its input's spatial
    size, by module name."""
    found: dict[str, ConvCall] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.groups == 1:
            def hook(mod, args, _out, name=name):
                h, w = args[0].shape[-2:]
                found[name] = ConvCall(mod.in_channels, mod.out_channels, tuple(mod.kernel_size), tuple(mod.stride),
                                       tuple(mod.padding), tuple(mod.dilation), int(h), int(w),
                                       isinstance(mod, nn.ConvTranspose2d))
            hooks.append(m.register_forward_hook(hook))
    device = next(model.parameters()).device
    try:
        with inference_graph(model), torch.no_grad():  # aux-head convs are not called, so never timed
            model(torch.zeros(1, 3, *input_size, device=device))
    finally:
        for h in hooks:
            h.remove()
    return found


def group_calls(group: LayerGroup, calls: dict[str, ConvCall], width: int) -> list[ConvCall]:
    """The convs a group's width touches, with that width: its own outputs, its consumers' inputs."""
    out = [replace(calls[n], out_ch=width) for n, _ in group.convs if n in calls]
    ins = [replace(calls[n], in_ch=calls[n].in_ch - group.size + width) for n, _ in group.consumers if n in calls]
    return out + ins


def unit_of(size: int, round_to: int | str) -> int:
    """The width step of a group: `round_to` in layers at least 4 × it wide, else 1 (DESIGN §5)."""
    unit = AUTO_UNIT if round_to == "auto" else int(round_to)
    return unit if size >= 4 * unit else 1


def width_steps(size: int, unit: int, floor: int, max_points: int = MAX_POINTS) -> list[int]:
    """Multiples of `unit` from the first at or above `floor` up to `size` (always included), thinned
    evenly to at most `max_points`."""
    first = max(unit, math.ceil(floor / unit) * unit)
    steps = list(range(first, size, unit)) + [size]
    if len(steps) > max_points:
        picks = {round(i * (len(steps) - 1) / (max_points - 1)) for i in range(max_points)}
        steps = [steps[i] for i in sorted(picks)]
    return steps


def time_conv(call: ConvCall, *, batch: int, device: torch.device, dtype: torch.dtype, iters: int = 10,
              warmup: int = 3) -> float:
    """Median milliseconds of one standalone conv forward with this shape (bias on: BN is folded)."""
    conv = call.module().to(device=device, dtype=dtype).eval()
    x = torch.randn(batch, call.in_ch, call.height, call.width, device=device, dtype=dtype)
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            conv(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


@dataclass
class LatencyTable:
    """`ms[group][width]`: time of the convs the group's width touches; `measured_on` says where/how."""

    ms: dict[str, dict[int, float]]
    measured_on: dict = field(default_factory=dict)
    conv_timings: int = 0  # standalone conv timings it took (identical shapes timed once)

    def to_json(self) -> dict:
        return {"ms": {g: {str(w): t for w, t in row.items()} for g, row in self.ms.items()},
                "measured_on": self.measured_on, "conv_timings": self.conv_timings}

    @classmethod
    def from_json(cls, d: dict) -> LatencyTable:
        return cls(ms={g: {int(w): float(t) for w, t in row.items()} for g, row in d["ms"].items()},
                   measured_on=dict(d.get("measured_on", {})), conv_timings=int(d.get("conv_timings", 0)))

    def total_ms(self) -> float:
        """Sum over groups of their full-width time (convs touched by two groups count twice)."""
        return sum(row[max(row)] for row in self.ms.values())


def build_table(groups: Sequence[LayerGroup], calls: dict[str, ConvCall], round_to: int | str,
                timer: Callable[[ConvCall], float], *, max_points: int = MAX_POINTS,
                max_layer_ratio: float = MAX_LAYER_RATIO) -> LatencyTable:
    """Time every group at its table widths; `timer(call)` gives ms of one conv (memoised by shape)."""
    memo: dict[str, float] = {}

    def timed(call: ConvCall) -> float:
        if call.key() not in memo:
            memo[call.key()] = timer(call)
        return memo[call.key()]

    ms = {}
    for g in groups:
        steps = width_steps(g.size, unit_of(g.size, round_to), min_keep(g.size, max_layer_ratio), max_points)
        ms[g.name] = {w: sum(timed(c) for c in group_calls(g, calls, w)) for w in steps}
    return LatencyTable(ms=ms, conv_timings=len(memo))


def fast_widths(row: dict[int, float]) -> list[int]:
    """Widths faster than every wider one (full width always kept): the steps worth stopping at."""
    kept, best = [], math.inf
    for w in sorted(row, reverse=True):
        if row[w] < best or not kept:
            kept.append(w)
            best = row[w]
    return sorted(kept)


@dataclass(order=True)
class _Move:
    ratio: float  # importance lost per ms saved
    gain: float  # ms saved (on a tie in ratio the smaller step goes first: finer control of the total)
    group: int = field(compare=False)
    width: int = field(compare=False)


def knapsack_widths(groups: Sequence[LayerGroup], scores: dict[str, torch.Tensor], table: LatencyTable,
                    saving_ms: float, *, auto: bool = False) -> dict[str, int]:
    """Kept width per group so that the table's time drops by about `saving_ms`, losing the least
    normalised importance per ms saved (greedy over each group's cheapest next jump)."""
    groups = [g for g in groups if g.name in scores and g.name in table.ms]
    rows = [table.ms[g.name] for g in groups]
    options = [fast_widths(r) if auto else sorted(r) for r in rows]
    lowest = [sorted(normalise(scores[g.name]).tolist()) for g in groups]
    prefix = [[0.0, *itertools.accumulate(s)] for s in lowest]  # importance of the k lowest channels
    keep = [g.size for g in groups]

    def best_move(gi: int) -> _Move | None:
        w, row, size = keep[gi], rows[gi], groups[gi].size
        moves = []
        for cand in options[gi]:
            gain = row[w] - row[cand]
            if cand < w and gain > 0:
                loss = prefix[gi][size - cand] - prefix[gi][size - w]
                moves.append(_Move(loss / gain, gain, gi, cand))
        return min(moves) if moves else None

    heap = [m for gi in range(len(groups)) if (m := best_move(gi)) is not None]  # one move per group
    heapq.heapify(heap)
    saved = 0.0
    while heap and saved < saving_ms:
        move = heapq.heappop(heap)
        if saved + move.gain - saving_ms > saving_ms - saved:  # overshoots more than it helps: not this one
            continue
        saved += move.gain
        keep[move.group] = move.width
        if (nxt := best_move(move.group)) is not None:
            heapq.heappush(heap, nxt)
    return {g.name: keep[i] for i, g in enumerate(groups) if keep[i] < g.size}


def predicted_saving(table: LatencyTable, keep: dict[str, int]) -> float:
    """The table's time saved by these kept widths (ms)."""
    return sum(table.ms[g][max(table.ms[g])] - table.ms[g][w] for g, w in keep.items())


def table_signature(groups: Sequence[LayerGroup], calls: dict[str, ConvCall]) -> list:
    """What a table depends on besides the device: every group's size and the shapes of its convs."""
    return [[g.name, g.size, [calls[n].key() for n, _ in g.convs + g.consumers if n in calls]] for g in groups]

