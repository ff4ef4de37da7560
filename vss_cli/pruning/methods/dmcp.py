"""`dmcp`: Guo et al., "DMCP: Differentiable Markov Channel Pruning for Neural Networks" (CVPR 2020).
References followed: the official zx55/dmcp training code for the FLOPs loss (`utils/loss_fn.py`,
`log_l1`) and mmrazor's DMCP port for the width states (5% steps from 10%).

Search space. Each prunable group's channels are ranked by |γ| (mean over its BNs; filter L1 where a
group has none) and cut at the width states `min_width`, `min_width` + `width_step`, ..., 1 (10%, 15%,
..., 100%: 19 states; fewer when a narrow layer rounds two states alike; `dmcp_gates.step_bounds`);
DMCP keeps *leading* channels, so state k adds the next channels of the ranking (no weights are moved:
the gates follow the ranking). The first state is always kept. For the others an architecture
parameter α_k gives the conditional keep probability p_k = sigmoid(α_k) of state k given state k−1 is
kept; the marginal keep probability is Π_{j≤k} p_j, non-increasing along the states (the paper's
Markov chain).

Gates are forward hooks on each group's BN outputs (removed afterwards). In architecture steps they
scale every channel by its step's marginal; in weight steps they zero the channels beyond a sampled
width. Expected kept width of a layer = Σ_k marginal_k·|step k|. Expected MACs is differentiable in
those widths: each conv contributes macs_full × E[in]/in × E[out]/out (as in the paper), from a table of
per-conv MACs measured once on a (1, 3, H, W) input at the run's input size with the aux head detached,
as `engine.complexity` counts (convolutions only). The FLOPs loss is the official `log_l1`: 0 within
[0.95T, T], log|E − T| below and log|E − 0.95T| above; the architecture loss is task loss + λ·FLOPs
loss with λ = `flops_weight` = 0.1.

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
    keep (1 − ratio) of their channels, by |γ|;
  * the searched widths are rescaled by one common factor when they miss T (above), and under
    `--allocation paper` with a budget the planner's knob scales them again to meet the budget (the
    paper keeps what the search found; `target_macs` fixes the widths and skips both);
  * the official log_l1's factor 0.1 inside the log far from T shifts the loss, not its gradient: left out.
Under `--allocation uniform|global` the searched widths are not used: the ranking is the |γ| leading-
channel order (the channels slimming keeps without a sparse phase), and the score report says so.
Report (`DMCPReport`): target/expected/planned/full MACs, iterations and α steps, the width scale factor, how far the
search moved the widths from the uniform start (`dmcp_width_moved_max`, a fraction of the layer) and
`extra_epochs` = `search_epochs` (training the method ran itself, which a grid charges to its budget).

Without a search (`score()` before `prepare()`, as `vss eval`'s oracle calls it) the scores are the
leading-channel order the search would start from: |γ| of the parent as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from vss_cli.engine.hooks import forward_hooks
from vss_cli.engine.macs import measure_conv_macs
from vss_cli.engine.train import TrainHooks, segmentation_loss
from vss_cli.errors import ConfigError
from vss_cli.pruning.base import PruneContext, PruningMethod, register_method
from vss_cli.pruning.method_options import MethodOptions, MethodReport, Scores, option
from vss_cli.pruning.methods.dmcp_gates import GateHooks, MarkovGate, leading_rank
from vss_cli.pruning.methods.dmcp_macs import BAND, ExpectedMacs, fit_widths, flops_loss, in_inference_graph
from vss_cli.pruning.planner import (
    Allocation,
    AllocationRequest,
    min_keep,
    register_allocation,
    round_keep,
)

AUX_WEIGHT = 0.5


# ---------------------------------------------------------------------------------------------
# Markov gates


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


@dataclass(frozen=True)
class DMCPOptions(MethodOptions):
    target_macs: float | None = option(None, "MACs target T in G MACs (None: the uniform architecture of the ratio)")
    search_epochs: int = option(1, "epochs of the width search (paper: a full supernet training)")
    warmup_fraction: float = option(0.3, "share of the search's iterations with weight steps only")
    max_iters: int | None = option(None, "iterations per search epoch (None: the whole training split)")
    flops_weight: float = option(0.1, "weight of the FLOPs loss in the architecture loss (official: 0.1)")
    arch_lr: float = option(0.1, "Adam learning rate of alpha (official: 0.5 over a long search)")
    min_width: float = option(0.1, "narrowest width a layer can keep, as a share (reference: 0.1)")
    width_step: float = option(0.05, "width step between Markov states, as a share (reference: 0.05)")
    keep_search_weights: bool = option(False, "keep the supernet's weights instead of the parent's")

    def check(self) -> None:
        if self.search_epochs < 1:
            raise ConfigError(f"dmcp: search_epochs {self.search_epochs} must be 1 or more")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"dmcp: warmup_fraction {self.warmup_fraction} must be in [0, 1)")
        if self.target_macs is not None and self.target_macs <= 0:
            raise ConfigError(f"--target-macs {self.target_macs} must be a positive number of G MACs")
        if not (0 < self.min_width <= 1 and 0 < self.width_step <= 1):
            raise ConfigError(f"dmcp: min_width {self.min_width} and width_step {self.width_step} must be in (0, 1]")


@dataclass
class DMCPReport(MethodReport):
    dmcp_target_macs: float
    dmcp_expected_macs: float
    dmcp_planned_macs: float
    dmcp_full_macs: float
    dmcp_iterations: int
    dmcp_arch_steps: int
    dmcp_warmup_iterations: int
    dmcp_width_scale: float
    dmcp_width_moved_max: float
    extra_epochs: int


@dataclass
class DMCPScores(MethodReport):
    dmcp_ranking: str | None = None


@register_method
class DMCP(PruningMethod):
    """Differentiable Markov channel search of per-layer widths under a MACs target (Guo et al., 2020)."""

    name = "dmcp"
    paper_allocation = "searched"  # the widths its search finds
    paper = "Guo et al., DMCP: Differentiable Markov Channel Pruning, CVPR 2020 (zx55/dmcp; mmrazor's DMCP port)"
    scores_need = "training (a width search), BN gammas"
    training_epochs_option = "search_epochs"
    training_epochs_min = 1
    Options = DMCPOptions

    def prepare(self, ctx: PruneContext) -> DMCPReport:
        cfg = self.config
        if ctx.fit is None:
            raise ConfigError("dmcp searches widths by training: pass a dataset it can train on")
        self._ranks = {g.name: leading_rank(g) for g in ctx.groups}
        table = measure_conv_macs(ctx.model, ctx.input_size, ctx.device)
        searched = [g for g in ctx.groups if in_inference_graph(g, table)]
        macs = ExpectedMacs(table, searched)
        gates = [MarkovGate(g, self._ranks[g.name], cfg.min_width, cfg.width_step) for g in searched]
        target = self._target(ctx, macs)
        check_target(target, macs.full, float(macs(torch.stack([g.step_sizes[0] for g in gates]))))
        uniform_keep_probability(gates, macs, (1 - BAND / 2) * target)
        start = width_fractions(gates)
        search = Search(gates=gates, hooks=GateHooks(gates, ctx.device), macs=macs, target=target,
                        flops_weight=cfg.flops_weight, arch_lr=cfg.arch_lr, warmup_fraction=cfg.warmup_fraction,
                        ignore_index=ctx.ignore_index, generator=torch.Generator().manual_seed(ctx.seed))
        self._run_search(ctx, search)
        with torch.no_grad():
            expected = [float(g.expected_width()) for g in gates]
            expected_macs = float(search.expected_macs())
        fitted = fit_widths(gates, expected, macs, target, ctx.round_to)
        outside = {g.name: round_keep(int(round((1 - ctx.ratio) * g.size)), g.size, ctx.round_to, 1)
                   for g in ctx.groups if g.name not in fitted.widths}
        self._widths = {**fitted.widths, **outside}
        moved = [abs(after - before) for after, before in zip(width_fractions(gates), start, strict=True)]
        return DMCPReport(target, expected_macs, fitted.macs, macs.full, search.iterations, search.arch_steps,
                          search.warmup_iters, fitted.scale, max(moved, default=0.0), cfg.search_epochs)

    def _target(self, ctx: PruneContext, macs: ExpectedMacs) -> float:
        """T: `target_macs` G MACs, else the MACs with every searched width scaled by (1 − ratio)."""
        if self.config.target_macs is not None:
            return self.config.target_macs * 1e9
        return float(macs(macs.sizes * (1.0 - ctx.ratio)))

    def _run_search(self, ctx: PruneContext, search: Search) -> None:
        """Train through ctx.fit with the gates installed; restore the parent's weights unless asked not to."""
        saved = None if self.config.keep_search_weights else \
            {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
        fit_kwargs = {} if self.config.max_iters is None else {"max_iters": self.config.max_iters}
        try:
            with forward_hooks(search.hooks.pairs()):
                ctx.fit(search.train_hooks(), self.config.search_epochs, **fit_kwargs)
        finally:
            if saved is not None:
                ctx.model.load_state_dict(saved)
            for p in ctx.model.parameters():
                p.grad = None
            ctx.model.eval()

    def score(self, ctx: PruneContext) -> Scores:
        """Leading channels first. Without a search (e.g. `vss eval`'s oracle, which runs no `prepare()`)
        the order is the one the search would have started from: |γ| of the parent as it is."""
        ranks = getattr(self, "_ranks", None) or {g.name: leading_rank(g) for g in ctx.groups}
        report = DMCPScores()
        if ctx.allocation != "paper":  # the search chose widths, which this allocation does not use
            report.dmcp_ranking = (f"|gamma| leading-channel order (the channels slimming keeps without a sparse "
                                   f"phase): --allocation {ctx.allocation} ignores the searched widths")
        return Scores({g.name: rank_scores(ranks[g.name]) for g in ctx.groups}, report)


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
    if method.config.target_macs is not None:  # the user's own target wins
        return Allocation("searched", lambda t: dict(base), {n: min(k, floor[n]) for n, k in base.items()}, fixed=True)
    top = max(g.size / base[g.name] for g in req.groups)

    def keep(t: float) -> dict[str, int]:
        return {g.name: min(g.size, max(floor[g.name], int(round(base[g.name] * (1 - t) * top))))
                for g in req.groups}

    return Allocation("searched", keep, floor)
