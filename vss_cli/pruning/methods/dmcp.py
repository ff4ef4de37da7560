"""`dmcp`: Guo et al., "DMCP: Differentiable Markov Channel Pruning for Neural Networks" (CVPR 2020).

Search space. Each prunable group's channels are ranked by |γ| (mean over its BNs; filter L1 where a
group has none) and cut into 10 ordered channel groups (width steps of 0.1; fewer when the layer has
fewer than 10 channels); DMCP keeps *leading* channels, so channel group k holds the k-th tenth of the
ranking (no weights are moved: the gates follow the ranking). The first step is always kept. For the
others an architecture parameter α_k gives the conditional keep probability p_k = sigmoid(α_k) of
step k given step k−1 is kept; the marginal keep probability is Π_{j≤k} p_j, non-increasing along the
steps (the paper's Markov chain).

Gates are forward hooks on each group's BN outputs (removed afterwards). In architecture steps they
scale every channel by its step's marginal; in weight steps they zero the channels beyond a sampled
width. Expected kept width of a layer = Σ_k marginal_k·|step k|. Expected MACs is differentiable in
those widths: each conv contributes macs_full × E[in]/in × E[out]/out (as in the paper), from a table of
per-conv MACs measured once on a (1, 3, H, W) input at the run's input size with the aux head detached,
as `engine.complexity` counts (convolutions only). The FLOPs loss is 0 within [0.95T, T] and log|E − T|
outside (the paper's form); the architecture loss is task loss + λ·FLOPs loss with λ = `flops_weight` = 0.1.

Target T: `target_macs` (G MACs, `--target-macs`) or, by default, the MACs of the model with every
prunable group's width scaled by (1 − `--global-ratio`) (the uniform architecture of that ratio).

Training goes through `ctx.fit` (no loop here): `TrainHooks.loss_fn` is the weight step with the
sandwich rule (max width + min width + one sampled width, losses summed so their gradients
accumulate); `TrainHooks.after_step` is the α step (Adam, lr `arch_lr`) on the same minibatch, every
iteration after a warm-up of weight-only steps.

Result: per layer the expected width, rounded to `--round-to` and at least one step; the kept channels
are the leading ones in |γ| order (`plan_from_widths` with |γ|-rank scores). Final check: if the
planned MACs miss T by more than 5%, all searched widths are scaled by one common factor (found by
bisection, closest MACs to T) and the factor is recorded.

Departures from the paper (short-budget mode, the default):
  * search length `search_epochs` = 1 (optionally `max_iters` per epoch) instead of the paper's full
    supernet training; warm-up = the first `warmup_fraction` = 0.3 of the iterations;
  * the random member of the sandwich is uniform per layer during warm-up and drawn from the Markov
    chain afterwards (the paper's variant sandwich rule); one such member, not two; no in-place
    distillation from the widest network;
  * `arch_lr` = 0.1, not the official 0.5: over a one-epoch search, Adam's momentum at 0.5 carries the
    expected MACs far past the [0.95T, T] band (measured on a tiny resnet50_seg briefly trained on
    the synthetic set: E/T swung between 0.76 and 1.10 within ten α steps and ended at 0.37 after forty); pass arch_lr=0.5 for
    the paper's setting on a long search;
  * α starts at the uniform architecture whose expected MACs sit inside [0.95T, T] (so a short search
    starts feasible and redistributes widths), not at full width;
  * the searched supernet weights (trained for many widths at once, with mixed BN statistics) are
    discarded and the parent's weights restored (`keep_search_weights` = False): the paper retrains
    the found architecture from scratch, vss fine-tunes it from the parent;
  * layers that run only in the auxiliary head (outside the inference MACs) are not searched: they
    keep (1 − ratio) of their channels, by |γ|.
Notes: target/expected/planned/full MACs, iterations and α steps, the width scale factor, how far the
search moved the widths from the uniform start (`dmcp_width_moved_max`, a fraction of the layer) and
`extra_epochs` = `search_epochs` (training the method ran itself, which a grid charges to its budget).

Without a search (`score()` before `prepare()`, as `vss eval`'s oracle calls it) the scores are the
leading-channel order the search would start from: |γ| of the parent as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from vss_cli.engine.hooks import forward_hooks
from vss_cli.engine.macs import measure_conv_macs
from vss_cli.engine.train import TrainHooks, segmentation_loss
from vss_cli.errors import ConfigError
from vss_cli.pruning.base import PruneContext, PruningMethod, register_method
from vss_cli.pruning.features import channel_outputs
from vss_cli.pruning.methods.dmcp_macs import BAND, ExpectedMacs, fit_widths, flops_loss, in_inference_graph
from vss_cli.pruning.planner import (
    Allocation,
    AllocationRequest,
    min_keep,
    register_allocation,
    round_keep,
)
from vss_cli.pruning.surgery import LayerGroup

STEPS = 10  # width steps of 0.1
AUX_WEIGHT = 0.5


# ---------------------------------------------------------------------------------------------
# Markov gates


def leading_rank(group: LayerGroup) -> torch.Tensor:
    """Channel indices from most to least important by |γ| (mean over BNs), filter L1 without BN."""
    if group.bns:
        key = torch.stack([bn.weight.detach().abs().float().cpu() for _, bn in group.bns]).mean(0)
    else:
        key = torch.stack([c.weight.detach().abs().flatten(1).sum(1).float().cpu() for _, c in group.convs]).mean(0)
    return torch.argsort(key, descending=True, stable=True)


@dataclass
class MarkovGate:
    """One group's ordered channel groups and their architecture parameters α (K − 1 of them)."""

    group: LayerGroup
    rank: torch.Tensor  # channel indices, most important first
    step_of: torch.Tensor = field(init=False)  # [C] channel group of each channel
    step_sizes: torch.Tensor = field(init=False)  # [K] channels per step
    alpha: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        c = self.group.size
        k = min(STEPS, c)
        bounds = [(i * c) // k for i in range(k + 1)]
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


# ---------------------------------------------------------------------------------------------
# the search, through ctx.fit


@dataclass
class Search:
    """State shared by the weight step (loss_fn) and the architecture step (after_step)."""

    gates: list[MarkovGate]
    hooks: GateHooks
    macs: ExpectedMacs
    target: float
    flops_weight: float
    arch_lr: float
    warmup_fraction: float
    ignore_index: int
    generator: torch.Generator
    warmup_iters: int = 0
    iterations: int = 0
    arch_steps: int = 0
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.Adam([g.alpha for g in self.gates], lr=self.arch_lr)

    def expected_macs(self) -> torch.Tensor:
        return self.macs(torch.stack([g.expected_width() for g in self.gates]))

    def on_fit_start(self, total_iterations: int) -> None:
        self.warmup_iters = int(round(self.warmup_fraction * total_iterations))

    def sandwich(self) -> list[dict[str, int]]:
        """Max width, min width and one sampled width (uniform in warm-up, from the chain after)."""
        warm = self.iterations < self.warmup_iters
        full = {g.group.name: g.steps for g in self.gates}
        least = {g.group.name: 1 for g in self.gates}
        sampled = {g.group.name: int(torch.randint(1, g.steps + 1, (1,), generator=self.generator)) if warm
                   else g.markov_sample(self.generator) for g in self.gates}
        return [full, least, sampled]

    def weight_loss(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = []
        for steps in self.sandwich():
            self.hooks.widths(steps)
            losses.append(segmentation_loss(model(images), targets, self.ignore_index, AUX_WEIGHT))
        self.hooks.clear()
        return torch.stack(losses).sum()

    def arch_step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, iteration: int) -> None:
        self.iterations = iteration
        if iteration <= self.warmup_iters:
            return
        self.hooks.architecture()
        task = segmentation_loss(model(images), targets, self.ignore_index, AUX_WEIGHT)
        self.hooks.clear()
        budget = flops_loss(self.expected_macs(), self.target).to(task.device, task.dtype)
        loss = task + self.flops_weight * budget
        alphas = [g.alpha for g in self.gates]
        for alpha, grad in zip(alphas, torch.autograd.grad(loss, alphas, allow_unused=True), strict=True):
            alpha.grad = torch.zeros_like(alpha) if grad is None else grad.cpu()
        self.optimizer.step()
        self.arch_steps += 1

    def train_hooks(self) -> TrainHooks:
        return TrainHooks(loss_fn=self.weight_loss, after_step=self.arch_step, on_fit_start=self.on_fit_start)


def width_fractions(gates: list[MarkovGate]) -> list[float]:
    """Each gated layer's expected kept width as a fraction of the layer."""
    with torch.no_grad():
        return [float(g.expected_width()) / g.group.size for g in gates]


def uniform_keep_probability(gates: list[MarkovGate], macs: ExpectedMacs, goal: float) -> float:
    """The common p_k whose expected MACs equal `goal` (bisection; E grows with p)."""
    lo, hi = 1e-4, 1 - 1e-4
    for _ in range(60):
        mid = (lo + hi) / 2
        for g in gates:
            g.set_uniform(mid)
        with torch.no_grad():
            e = float(macs(torch.stack([g.expected_width() for g in gates])))
        lo, hi = (mid, hi) if e < goal else (lo, mid)
    for g in gates:
        g.set_uniform(lo)
    return lo


# ---------------------------------------------------------------------------------------------
# the method


def check_target(target: float, full: float, least: float) -> None:
    if not least < target < full:
        raise ConfigError(
            f"dmcp target {target / 1e9:.4f}G MACs is outside what its search can reach "
            f"({least / 1e9:.4f}G at the narrowest, {full / 1e9:.4f}G unpruned): pass --target-macs in that range"
        )


def rank_scores(rank: torch.Tensor) -> torch.Tensor:
    """Leading channels score highest (C − position), so `plan_from_widths` keeps them."""
    scores = torch.empty(rank.numel())
    scores[rank] = torch.arange(rank.numel(), 0, -1, dtype=torch.float32)
    return scores


@register_method
class DMCP(PruningMethod):
    """Differentiable Markov channel search of per-layer widths under a MACs target (Guo et al., 2020)."""

    name = "dmcp"
    paper_allocation = "searched"  # the widths its search finds
    training_epochs_option = "search_epochs"
    training_epochs_min = 1
    options = {"target_macs": None, "search_epochs": 1, "warmup_fraction": 0.3, "max_iters": None,
               "flops_weight": 0.1, "arch_lr": 0.1, "keep_search_weights": False}

    def prepare(self, ctx: PruneContext) -> None:
        self._validate(ctx)
        self._ranks = {g.name: leading_rank(g) for g in ctx.groups}
        table = measure_conv_macs(ctx.model, ctx.input_size, ctx.device)
        searched = [g for g in ctx.groups if in_inference_graph(g, table)]
        macs = ExpectedMacs(table, searched)
        gates = [MarkovGate(g, self._ranks[g.name]) for g in searched]
        target = self._target(ctx, macs)
        check_target(target, macs.full, float(macs(torch.stack([g.step_sizes[0] for g in gates]))))
        uniform_keep_probability(gates, macs, (1 - BAND / 2) * target)
        start = width_fractions(gates)
        search = Search(gates=gates, hooks=GateHooks(gates, ctx.device), macs=macs, target=target,
                        flops_weight=float(self.opts["flops_weight"]), arch_lr=float(self.opts["arch_lr"]),
                        warmup_fraction=float(self.opts["warmup_fraction"]), ignore_index=ctx.ignore_index,
                        generator=torch.Generator().manual_seed(ctx.seed))
        self._run_search(ctx, search)
        with torch.no_grad():
            expected = [float(g.expected_width()) for g in gates]
            expected_macs = float(search.expected_macs())
        fitted = fit_widths(gates, expected, macs, target, ctx.round_to)
        outside = {g.name: round_keep(int(round((1 - ctx.ratio) * g.size)), g.size, ctx.round_to, 1)
                   for g in ctx.groups if g.name not in fitted.widths}
        self._widths = {**fitted.widths, **outside}
        moved = [abs(after - before) for after, before in zip(width_fractions(gates), start, strict=True)]
        ctx.notes.update(dmcp_target_macs=target, dmcp_expected_macs=expected_macs, dmcp_planned_macs=fitted.macs,
                         dmcp_full_macs=macs.full, dmcp_iterations=search.iterations,
                         dmcp_arch_steps=search.arch_steps, dmcp_warmup_iterations=search.warmup_iters,
                         dmcp_width_scale=fitted.scale, dmcp_width_moved_max=max(moved, default=0.0),
                         extra_epochs=int(self.opts["search_epochs"]))

    def _target(self, ctx: PruneContext, macs: ExpectedMacs) -> float:
        """T: `target_macs` G MACs, else the MACs with every searched width scaled by (1 − ratio)."""
        if self.opts["target_macs"] is not None:
            return float(self.opts["target_macs"]) * 1e9
        return float(macs(macs.sizes * (1.0 - ctx.ratio)))

    def _validate(self, ctx: PruneContext) -> None:
        if ctx.fit is None:
            raise ConfigError("dmcp searches widths by training: pass a dataset it can train on")
        if int(self.opts["search_epochs"]) < 1:
            raise ConfigError(f"dmcp: search_epochs {self.opts['search_epochs']} must be 1 or more")
        if not 0 <= float(self.opts["warmup_fraction"]) < 1:
            raise ConfigError(f"dmcp: warmup_fraction {self.opts['warmup_fraction']} must be in [0, 1)")
        if self.opts["target_macs"] is not None and float(self.opts["target_macs"]) <= 0:
            raise ConfigError(f"--target-macs {self.opts['target_macs']} must be a positive number of G MACs")

    def _run_search(self, ctx: PruneContext, search: Search) -> None:
        """Train through ctx.fit with the gates installed; restore the parent's weights unless asked not to."""
        saved = None if self.opts["keep_search_weights"] else \
            {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
        fit_kwargs = {} if self.opts["max_iters"] is None else {"max_iters": int(self.opts["max_iters"])}
        try:
            with forward_hooks(search.hooks.pairs()):
                ctx.fit(search.train_hooks(), int(self.opts["search_epochs"]), **fit_kwargs)
        finally:
            if saved is not None:
                ctx.model.load_state_dict(saved)
            for p in ctx.model.parameters():
                p.grad = None
            ctx.model.eval()

    def score(self, ctx: PruneContext) -> dict[str, torch.Tensor]:
        """Leading channels first. Without a search (e.g. `vss eval`'s oracle, which runs no `prepare()`)
        the order is the one the search would have started from: |γ| of the parent as it is."""
        ranks = getattr(self, "_ranks", None) or {g.name: leading_rank(g) for g in ctx.groups}
        if ctx.allocation != "paper":  # the search chose widths, which this allocation does not use
            ctx.notes["dmcp_ranking"] = (f"|gamma| leading-channel order (as slimming's without a sparse phase): "
                                         f"--allocation {ctx.allocation} ignores the searched widths")
        return {g.name: rank_scores(ranks[g.name]) for g in ctx.groups}


@register_allocation("searched")
def searched_rule(req: AllocationRequest) -> Allocation:
    """DMCP's searched widths, scaled by one factor: t = 0 full width, t = 1 the per-layer floors; fixed
    (the budget not applied) when the user gave dmcp its own `target_macs`."""
    method = req.method
    searched = getattr(method, "_widths", None) if isinstance(method, DMCP) else None
    if searched is None:
        raise ConfigError("the searched allocation needs dmcp's search (prepare() before planning): use "
                          "--allocation uniform or global for other methods")
    base = {g.name: max(1, min(g.size, searched.get(g.name, g.size))) for g in req.groups}
    floor = {g.name: min_keep(g.size, req.max_layer_ratio) for g in req.groups}
    if method.opts["target_macs"] is not None:  # the user's own target wins
        return Allocation("searched", lambda t: dict(base), {n: min(k, floor[n]) for n, k in base.items()}, fixed=True)
    top = max(g.size / base[g.name] for g in req.groups)

    def keep(t: float) -> dict[str, int]:
        return {g.name: min(g.size, max(floor[g.name], int(round(base[g.name] * (1 - t) * top))))
                for g in req.groups}

    return Allocation("searched", keep, floor)
