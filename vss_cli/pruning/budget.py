"""What `--global-ratio` counts (`--budget`): a small registry of budgets.

A budget turns an allocation's family of kept widths (`WidthFamily`, see `planner`) into one plan,
always through `Budget.fit` (the planner's only door). The common way: give the cost of a candidate
plan — the share of the budget's quantity it removes, for kept widths per group — and let
`bisect_knob` find the knob t whose plan removes `ratio` (bisection on t, then, between the two
bracketing plans, groups moved one at a time to the narrower width, the closest plan kept). A
budget may instead choose the widths itself by overriding `fit` (latency: one that measures).

  channels  removed group channels (each counted once per conv it removes) / all of them, counted on
            the allocation's widths before rounding: uniform at R takes floor(R·C) from every layer and
            rounding (always upwards, `planner.round_keep`) may keep a few more, so the achieved share
            can fall short of R by the rounding slack (reported as `channel_prune_ratio`);
  macs      removed MACs / the model's MACs of the rounded plan (ptflops, aten backend, at the run's input size, aux head
            detached), from an analytic per-conv model: every conv that runs costs
            macs × out'/out × in'/in (depthwise: × out'/out), where out' is its group's kept width
            and in' drops by what the groups it consumes lose; calibrated against ptflops by
            keeping whatever ptflops counts beyond the convs as a constant.
  latency   removed share of the parent's measured latency on the run's device; chooses the widths
            itself (a knapsack over a cached per-layer latency table, `pruning.latency`), through a
            measuring `planner` the prune workflow gives it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch.nn as nn

from vss_cli.errors import ConfigError
from vss_cli.pruning.surgery import LayerGroup

Widths = dict[str, int]
Cost = Callable[[Widths], float]
TOLERANCE = 0.02  # an unreachable ratio is one the narrowest plan misses by more than this
STEPS = 40


@dataclass
class BudgetFit:
    """The chosen plan's kept widths, its knob value and the share of the budget it removes.

    `rule` names what spread the cut when the budget chose the widths itself (None: the allocation);
    `details` is what such a budget measured (recorded with the run)."""

    widths: Widths
    knob: float | None
    cost: float
    rule: str | None = None
    details: dict = field(default_factory=dict)


@dataclass
class WidthFamily:
    """An allocation's kept widths along the knob t, before (`keep`) and after (`rounded`) rounding,
    and the rounding itself (`round`)."""

    keep: Callable[[float], Widths]
    rounded: Callable[[float], Widths]
    round: Callable[[Widths], Widths]


def bisect_knob(keep_at: Callable[[float], Widths], cost: Cost, ratio: float, *, strict: bool = True,
                what: str = "channels") -> BudgetFit:
    """The plan along `keep_at` whose cost is closest to `ratio` (cost grows with the knob)."""
    most = cost(keep_at(1.0))
    if strict and most < ratio - TOLERANCE:
        raise ConfigError(f"--global-ratio {ratio} is out of reach under --budget {what}: the per-layer cap allows "
                          f"at most {most:.3f}; pass a smaller ratio")
    lo, hi = 0.0, 1.0
    for _ in range(STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(keep_at(mid)) < ratio else (lo, mid)
    wide, narrow = keep_at(lo), keep_at(hi)
    candidates, current = [dict(wide)], dict(wide)
    for name, width in narrow.items():
        if width != current[name]:
            current[name] = width
            candidates.append(dict(current))
    best = min(candidates, key=lambda w: abs(cost(w) - ratio))
    return BudgetFit(best, hi if best == narrow else lo, cost(best))


def group_channel_cost(groups: Sequence[LayerGroup]) -> Cost:
    """Share of the groups' weighted channels that kept widths remove."""
    total = sum(g.size * g.weight for g in groups) or 1

    def cost(widths: Widths) -> float:
        return sum((g.size - widths.get(g.name, g.size)) * g.weight for g in groups) / total

    return cost


class Budget:
    """Base class: `name`, and `cost(ctx)` for the common search (or override `fit`).

    `after_rounding`: the search sees the rounded widths (the cost of the real plan); False counts
    the allocation's own widths and rounds after (rounding only keeps more, so it falls short)."""

    name: ClassVar[str] = ""
    after_rounding: ClassVar[bool] = True

    def cost(self, ctx) -> Cost:
        raise NotImplementedError

    def fit(self, ctx, family: WidthFamily, scores: dict, ratio: float) -> BudgetFit:
        """The plan of `family` this budget picks for `ratio` (scores: for budgets that measure)."""
        if self.after_rounding:
            return bisect_knob(family.rounded, self.cost(ctx), ratio, what=self.name)
        fit = bisect_knob(family.keep, self.cost(ctx), ratio, what=self.name)
        return BudgetFit(family.round(fit.widths), fit.knob, fit.cost)


_BUDGETS: dict[str, type[Budget]] = {}


def register_budget(cls: type[Budget]) -> type[Budget]:
    """Class decorator adding a budget under `cls.name`."""
    if not cls.name:
        raise ValueError("a budget needs a name")
    _BUDGETS[cls.name] = cls
    return cls


def list_budgets() -> list[str]:
    return list(_BUDGETS)


def get_budget(name: str, **setting) -> Budget:
    """The budget `name`; `setting` goes to its constructor (latency: its measuring planner)."""
    if name not in _BUDGETS:
        raise ConfigError(f"unknown --budget '{name}': choose from {', '.join(_BUDGETS)}")
    return _BUDGETS[name](**setting)


@register_budget
class ChannelBudget(Budget):
    """`--global-ratio` = share of prunable (inference-graph) channels removed."""

    name = "channels"
    after_rounding = False  # R = the share the allocation asks; `--round-to` may keep a few channels more

    def cost(self, ctx) -> Cost:
        return group_channel_cost(ctx.groups)


# ---------------------------------------------------------------------------------------------
# MACs


@dataclass
class _ConvTerm:
    macs: float
    out_channels: int
    in_channels: int
    depthwise: bool
    producer: str | None
    inputs: list[str]


class MacsModel:
    """Inference MACs as a function of kept widths per group (see the module docstring)."""

    def __init__(self, model: nn.Module, groups: Sequence[LayerGroup], input_size: tuple[int, int],
                 measured: float | None = None) -> None:
        from vss_cli.engine.complexity import count_complexity
        from vss_cli.engine.macs import measure_conv_macs  # per conv: its inference MACs

        table = measure_conv_macs(model, input_size, next(model.parameters()).device)
        producer = {conv: g.name for g in groups for _, conv in g.convs}
        consumed: dict[nn.Module, list[str]] = {}
        for g in groups:
            for conv in {m for _, m in g.consumers}:
                consumed.setdefault(conv, []).append(g.name)
        self.sizes = {g.name: g.size for g in groups}
        self.terms = [_ConvTerm(macs, conv.out_channels, conv.in_channels,
                                conv.groups > 1 and conv.groups == conv.in_channels,
                                producer.get(conv), consumed.get(conv, [])) for conv, macs in table.items()]
        convs = self.of({})
        self.full = float(measured if measured is not None else count_complexity(model, input_size).macs)
        self.other = self.full - convs  # what ptflops counts beyond the convs: unchanged by pruning

    def of(self, widths: Widths) -> float:
        """Conv MACs with the given kept widths (groups not named keep their width)."""
        total = 0.0
        for t in self.terms:
            out = widths.get(t.producer, t.out_channels) / t.out_channels if t.producer else 1.0
            lost = sum(self.sizes[n] - widths.get(n, self.sizes[n]) for n in t.inputs)
            inp = 1.0 if t.depthwise else (t.in_channels - lost) / t.in_channels
            total += t.macs * out * inp
        return total

    def macs(self, widths: Widths) -> float:
        return self.of(widths) + self.other

    def reduction(self, widths: Widths) -> float:
        return 1.0 - self.macs(widths) / self.full


@register_budget
class MacsBudget(Budget):
    """`--global-ratio` = share of the model's MACs removed (ptflops, at the run's input size)."""

    name = "macs"

    def cost(self, ctx) -> Cost:
        return MacsModel(ctx.model, ctx.groups, tuple(ctx.input_size)).reduction


@register_budget
class LatencyBudget(Budget):
    """`--global-ratio` = share of the parent's measured latency removed on the run's device, dtype,
    batch and input size. It chooses the widths itself instead of searching the allocation: the prune
    workflow gives it a `planner(ctx, scores) -> BudgetFit` that reads (or measures and caches) a
    per-layer latency table and runs the knapsack of `pruning.latency`, calibrated on measured
    speedups (`workflows.latency_budget.latency_planner`)."""

    name = "latency"

    def __init__(self, planner: Callable | None = None) -> None:
        self.planner = planner

    def fit(self, ctx, family: WidthFamily, scores: dict, ratio: float) -> BudgetFit:
        if self.planner is None:
            raise ConfigError("--budget latency is planned from timings on the device: run it through `vss prune` "
                              "(workflows.latency_budget.latency_planner)")
        return self.planner(ctx, scores)
