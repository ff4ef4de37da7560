"""From per-channel scores to a plan (DESIGN §5): allocation rules, rounding, the chosen channels.

A plan has three parts. The *allocation* says how many channels each layer keeps; every rule is a
family of kept widths along one common knob t in [0, 1] (t = 0 keeps everything, widths never grow
with t), so the *budget* (`budget.py`) can pick the t whose plan removes the asked share of channels,
MACs or latency. *Rounding* then makes kept widths multiples of `round_to` = K, but only in layers at
least 4K wide, and always upwards: a rounded layer keeps at least what its allocation gave, a
narrower layer keeps exactly that, so rounding never cuts a layer further than asked (the budget
search sees the rounded widths, so the total still matches). Inside a layer the lowest-scored
channels go.

Rules (`ALLOCATIONS`, a registry; `--allocation paper` takes the method's `paper_allocation`):
  uniform     every layer loses the fraction t of its channels (floor(t·C) of C);
  global      one threshold across layers on scores normalised per layer (`--normalizer`
              mean|max|none): channels taken lowest first until t of all group channels went;
  global_raw  `global` on raw scores (for criteria whose raw values compare across layers).
A method whose paper spreads the cut its own way registers that rule beside itself
(`register_allocation`), so this module names no method. A per-layer cap keeps at least
1 − MAX_LAYER_RATIO of every layer unless the rule sets its own floor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from vss_cli.errors import ConfigError
from vss_cli.pruning.budget import WidthFamily, bisect_knob, get_budget, group_channel_cost
from vss_cli.pruning.surgery import LayerGroup

MAX_LAYER_RATIO = 0.9  # at most this fraction of one layer's channels goes
ROUND_SPAN = 4  # rounding to K applies only to layers at least ROUND_SPAN·K wide
USER_ALLOCATIONS = ("paper", "uniform", "global")

Widths = dict[str, int]


def min_keep(size: int, max_layer_ratio: float = MAX_LAYER_RATIO) -> int:
    """The fewest channels the per-layer cap lets a layer of `size` keep."""
    return min(size, max(1, math.ceil(size * (1 - max_layer_ratio) - 1e-9)))


def round_keep(keep: int, size: int, round_to: int, floor: int = 1) -> int:
    """A kept width rounded up to a multiple of `round_to` in layers at least 4·round_to wide.

    Narrower layers (and `round_to` 1) keep `keep` exactly; the result is within [floor, size].
    """
    keep = min(size, max(int(keep), floor, 1))
    if round_to <= 1 or size < ROUND_SPAN * round_to:
        return keep
    return min(size, math.ceil(keep / round_to) * round_to)


# ---------------------------------------------------------------------------------------------
# normalisers for the global threshold


def _mean(s: torch.Tensor) -> torch.Tensor:
    m = s.abs().mean()
    return s / m if m > 0 else s


def _max(s: torch.Tensor) -> torch.Tensor:
    m = s.abs().max()
    return s / m if m > 0 else s


NORMALIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"mean": _mean, "max": _max, "none": lambda s: s}


def normalise(scores: torch.Tensor, normalizer: str = "mean") -> torch.Tensor:
    """Per-layer normalisation before a global ranking; a layer of all-zero scores stays all zero."""
    if normalizer not in NORMALIZERS:
        raise ConfigError(f"unknown --normalizer '{normalizer}': choose from {', '.join(NORMALIZERS)}")
    return NORMALIZERS[normalizer](scores.detach().float().cpu())


# ---------------------------------------------------------------------------------------------
# allocation rules


@dataclass
class Allocation:
    """Kept width per group as a function of the common knob t; `fixed`: t is ignored."""

    rule: str
    keep: Callable[[float], Widths]
    floor: Widths
    fixed: bool = False


@dataclass
class AllocationRequest:
    """What a rule may read: the scored groups, their scores, and the method and context."""

    groups: list[LayerGroup]
    scores: dict[str, torch.Tensor]
    normalizer: str = "mean"
    method: object | None = None
    ctx: object | None = None
    max_layer_ratio: float = MAX_LAYER_RATIO

    def floors(self) -> Widths:
        return {g.name: min_keep(g.size, self.max_layer_ratio) for g in self.groups}


class Threshold:
    """One threshold over several groups: channels in ascending normalised score, lowest first.

    `keep(t)` removes channels in that order (each counted `weight` times, skipping layers at their
    floor) until t of the groups' weighted channels went; a larger t continues the same walk.
    """

    def __init__(self, groups: Sequence[LayerGroup], scores: dict[str, torch.Tensor], normalizer: str,
                 floor: Widths) -> None:
        self.groups, self.floor = list(groups), floor
        entries = []
        for gi, g in enumerate(self.groups):
            s = normalise(scores[g.name], normalizer)
            if s.numel() != g.size:
                raise ValueError(f"{g.name}: {s.numel()} scores for {g.size} channels")
            entries += [(v, gi, c) for c, v in enumerate(s.tolist())]
        self.order = [gi for _, gi, _ in sorted(entries)]
        self.total = sum(g.size * g.weight for g in self.groups)

    def keep(self, t: float) -> Widths:
        target, done = t * self.total, 0.0
        kept = [g.size for g in self.groups]
        for gi in self.order:
            if done >= target - 1e-9:
                break
            g = self.groups[gi]
            if kept[gi] > self.floor[g.name]:
                kept[gi] -= 1
                done += g.weight
        return {g.name: kept[gi] for gi, g in enumerate(self.groups)}


def uniform_rule(req: AllocationRequest) -> Allocation:
    floor = req.floors()

    def keep(t: float) -> Widths:
        return {g.name: max(floor[g.name], g.size - math.floor(t * g.size + 1e-9)) for g in req.groups}

    return Allocation("uniform", keep, floor)


def global_rule(req: AllocationRequest, rule: str = "global") -> Allocation:
    floor = req.floors()
    return Allocation(rule, Threshold(req.groups, req.scores, req.normalizer, floor).keep, floor)


def global_raw_rule(req: AllocationRequest) -> Allocation:
    return global_rule(AllocationRequest(req.groups, req.scores, "none", req.method, req.ctx, req.max_layer_ratio),
                       "global_raw")


ALLOCATIONS: dict[str, Callable[[AllocationRequest], Allocation]] = {}


def register_allocation(name: str) -> Callable:
    """Decorator adding `fn(AllocationRequest) -> Allocation` to the allocation rules under `name`."""

    def decorate(fn: Callable[[AllocationRequest], Allocation]) -> Callable[[AllocationRequest], Allocation]:
        ALLOCATIONS[name] = fn
        return fn

    return decorate


register_allocation("uniform")(uniform_rule)
register_allocation("global")(global_rule)
register_allocation("global_raw")(global_raw_rule)


def rule_for(allocation: str, method) -> str:
    """The rule `--allocation` names: `paper` means the method's own `paper_allocation`."""
    if allocation not in USER_ALLOCATIONS:
        raise ConfigError(f"unknown --allocation '{allocation}': choose from {', '.join(USER_ALLOCATIONS)}")
    name = getattr(method, "paper_allocation", "global") if allocation == "paper" else allocation
    if name not in ALLOCATIONS:
        raise ConfigError(f"allocation rule '{name}' is not registered: its method registers it beside itself")
    return name


def round_widths(widths: Widths, groups: Sequence[LayerGroup], floor: Widths, round_to: int) -> Widths:
    sizes = {g.name: g.size for g in groups}
    return {n: round_keep(k, sizes[n], round_to, floor[n]) for n, k in widths.items()}


def rounded(allocation: Allocation, groups: Sequence[LayerGroup], round_to: int) -> Callable[[float], Widths]:
    """The allocation's widths after rounding (what a budget counting the rounded plan evaluates)."""
    return lambda t: round_widths(allocation.keep(t), groups, allocation.floor, round_to)


# ---------------------------------------------------------------------------------------------
# the plan


@dataclass
class PlanResult:
    """A plan and how it was reached: the channels removed per group, the allocation rule, the knob
    t the budget chose (None: fixed widths), the share of the budget the plan removes as planned
    (None when the rule fixes the widths, so the budget was not applied), and what a measuring
    budget recorded."""

    removed: dict[str, list[int]]
    rule: str
    knob: float | None = None
    planned_reduction: float | None = None
    budget_details: dict = field(default_factory=dict)

    @property
    def budget_applied(self) -> bool:
        return self.planned_reduction is not None

    def notes(self) -> dict:
        out = {"allocation_rule": self.rule, "allocation_knob": self.knob, "budget_applied": self.budget_applied}
        if self.budget_applied:
            out["planned_reduction"] = self.planned_reduction
        return {**out, **self.budget_details}


def plan_channels(method, ctx, scores: dict[str, torch.Tensor], budget=None) -> PlanResult:
    """The run's plan: its allocation rule, searched under its budget (`budget`, else the one
    `ctx.budget` names), rounded."""
    name = rule_for(getattr(ctx, "allocation", "paper"), method)
    groups = [g for g in ctx.groups if g.name in scores]
    if not groups:
        return PlanResult({}, name)
    req = AllocationRequest(groups, scores, getattr(ctx, "normalizer", "mean"), method, ctx)
    allocation = ALLOCATIONS[name](req)
    round_at = rounded(allocation, groups, ctx.round_to)
    if allocation.fixed:  # the rule fixes the widths; the ratio is not used
        return PlanResult(plan_from_widths(groups, scores, round_at(0.0)), allocation.rule)
    budget = budget or get_budget(getattr(ctx, "budget", "channels"))
    family = WidthFamily(allocation.keep, round_at,
                         lambda w: round_widths(w, groups, allocation.floor, ctx.round_to))
    fit = budget.fit(ctx, family, scores, ctx.ratio)
    return PlanResult(plan_from_widths(groups, scores, fit.widths), fit.rule or allocation.rule, fit.knob, fit.cost,
                      dict(fit.details))


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


def global_threshold_plan(groups: Sequence[LayerGroup], scores: dict[str, torch.Tensor], ratio: float, *,
                          round_to: int = 8, normalize: bool = True,
                          max_layer_ratio: float = MAX_LAYER_RATIO) -> dict[str, list[int]]:
    """One global threshold (mean-normalised, or raw) removing about `ratio` of the groups' weighted
    channels, rounded as above; asks beyond the per-layer caps take what the caps allow."""
    groups = [g for g in groups if g.name in scores]
    req = AllocationRequest(groups, scores, "mean" if normalize else "none", max_layer_ratio=max_layer_ratio)
    keep_at = rounded(global_rule(req), groups, round_to)
    fit = bisect_knob(keep_at, group_channel_cost(groups), ratio, strict=False)
    return plan_from_widths(groups, scores, fit.widths)
