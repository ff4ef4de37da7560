"""`slimming`: Network Slimming (Liu et al., "Learning Efficient Convolutional Networks through Network
Slimming", ICCV 2017).

Training with an L1 penalty λ·Σ|γ| on every BatchNorm scale pushes unimportant channels' γ towards
zero; pruning then removes the channels with the smallest |γ|, ranked globally across layers on the
raw values (`normalize = False`: the penalty makes γ comparable between layers). A group's score is
the mean |γ| over its BN members. Groups with no BatchNorm have no γ: slimming leaves them unpruned
(the paper prunes BN-scaled channels only) and lists them in the run's notes.

If the parent run was trained without `--slimming-lambda`, `prepare()` first runs a sparse phase
through the one training loop (`ctx.fit`, with `bn_l1_subgradient` — λ·sign(γ) added to every γ
gradient after backward — as its `regularize` hook). The notes record the share of |γ| below 1e-2
before and after (`gamma_below_1e-2_before/after`), warn when it stays under 5%, and give
`extra_epochs` (the phase's length, which a grid charges to the method's training budget).

Choosing the phase. A BN network is nearly invariant to the scale of γ, so the subgradient first
shrinks every γ together at ~lr·λ per step; only once γ has fallen to the size of β does the task loss
defend the channels it needs. The phase must be long and strong enough for that drift to reach zero.
Measured on the default synthetic baseline (U-Net width 0.25, 12 epochs, mIoU 0.857, every |γ| in
[0.93, 1.00]; 20 steps per epoch, lr 0.05 poly): λ 1e-4 … 1e-2 for 2 epochs moved nothing (0% below
1e-2); λ 0.02 × 8 epochs: median |γ| 0.24, 0% below 1e-2, mIoU 0.886; λ 0.03 × 8: 90.7% below 1e-2,
mIoU 0.683 before pruning; λ 0.03 × 12: 95.2%, 0.639; λ 0.05 × 4 and λ ≥ 0.1 × 2 collapsed the network
(mIoU ≤ 0.15) before channels separated. Hence the default: 8 epochs at λ = 0.03 × 160 / (the
phase's optimiser steps), i.e. λ = 0.03 on the synthetic set, scaled down on larger sets so the total
L1 push Σ λ is the same (an explicit `slimming_lambda` is used as given).

Options:
  `slimming_lambda` = None: λ of the sparse phase (None = the step-scaled default above; the paper:
      1e-4 for VGGNet, 1e-5 for ResNet, over 160 epochs from scratch).
  `sparse_epochs` = 8: length of that phase. 0 prunes on the raw |γ| and says so in the notes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from vss_cli.engine.progress import log
from vss_cli.engine.train import TrainHooks
from vss_cli.errors import ConfigError
from vss_cli.pruning.base import PruneContext, PruningMethod, mean_over_members, register_method
from vss_cli.pruning.method_options import MethodOptions, MethodReport, Scores, option

SMALL_GAMMA = 1e-2  # |γ| below this counts as sparsified
WARN_SHARE = 0.05  # a sparse phase leaving fewer channels than this below SMALL_GAMMA is reported
EPOCHS = 8  # the sparse phase's default length (module docstring: how it was chosen)
L1_PUSH = 0.03 * 160  # default Σ over the phase's steps of λ (λ 0.03 × 8 epochs × 20 steps on synthetic)


def bn_l1_subgradient(model: nn.Module, lam: float) -> None:
    """Add λ·sign(γ) to the gradient of every BatchNorm scale γ (the subgradient of λ·Σ|γ|, Liu et al.).

    Call it after backward and before the optimiser step (`TrainHooks.regularize`); BNs without an
    affine weight or without a gradient are left alone."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None and m.weight.grad is not None:
            m.weight.grad.add_(torch.sign(m.weight.detach()), alpha=lam)


def small_gamma_share(model: nn.Module, threshold: float = SMALL_GAMMA) -> float:
    """Share of all BatchNorm channels whose |γ| is below `threshold`."""
    gammas = [m.weight.detach().abs().flatten() for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]
    if not gammas:
        return 0.0
    return float((torch.cat(gammas) < threshold).float().mean())


class SparsePenalty:
    """The phase's `regularize` hook; λ < 0 means the default, L1_PUSH spread over the phase's steps."""

    def __init__(self, lam: float) -> None:
        self.lam = lam

    def on_fit_start(self, total_iterations: int) -> None:
        if self.lam < 0:
            self.lam = L1_PUSH / max(total_iterations, 1)

    def __call__(self, model: nn.Module) -> None:
        if self.lam < 0:
            raise RuntimeError("slimming's default lambda needs on_fit_start(total_iterations) before training")
        bn_l1_subgradient(model, self.lam)


def slimming_regularizer(lam: float) -> Callable[[nn.Module], None]:
    """A `TrainHooks.regularize` hook applying `bn_l1_subgradient` with λ = `lam`."""
    return lambda model: bn_l1_subgradient(model, lam)


def parent_lambda(ctx: PruneContext) -> float:
    """λ the parent was trained with (missing = 0: trained without the sparsity penalty)."""
    return float((ctx.parent_config or {}).get("slimming_lambda") or 0.0)


@dataclass(frozen=True)
class SlimmingOptions(MethodOptions):
    slimming_lambda: float | None = option(None, "lambda of the sparse phase (None: 0.03 x 160 spread over the "
                                           "phase's steps; paper: 1e-4 VGG, 1e-5 ResNet over 160 epochs)")
    sparse_epochs: int = option(EPOCHS, "length of the sparse phase when the parent was trained without lambda "
                                "(0: prune on the raw |gamma|)")

    def check(self) -> None:
        if self.sparse_epochs < 0 or (self.slimming_lambda is not None and self.slimming_lambda < 0):
            raise ConfigError(f"slimming: --sparse-epochs {self.sparse_epochs} and slimming_lambda "
                              f"{self.slimming_lambda} must be 0 or more")


@dataclass
class SlimmingReport(MethodReport):
    """What the sparse phase did (None: not applicable)."""

    sparse_phase: bool = False
    extra_epochs: int = 0
    gamma_below_1e_2_before: float | None = None
    gamma_below_1e_2_after: float | None = None
    sparse_epochs: int | None = None
    slimming_lambda: float | None = None
    parent_slimming_lambda: float | None = None
    warning: str | None = None

    def notes(self) -> dict:  # the recorded names keep their "1e-2"
        return {k.replace("1e_2", "1e-2"): v for k, v in super().notes().items()}


@dataclass
class SlimmingScores(MethodReport):
    unpruned_without_bn: list | None = None


@register_method
class Slimming(PruningMethod):
    """|γ| of the group's BatchNorm channels, ranked globally without normalisation (Liu et al., 2017)."""

    name = "slimming"
    paper_allocation = "global_raw"  # one global threshold on raw |γ| (resprune.py)
    normalize = False
    paper = "Liu et al., Learning Efficient Convolutional Networks through Network Slimming, ICCV 2017 " \
            "(Eric-mingjie/network-slimming)"
    scores_need = "BN gammas (a sparse training phase when the parent had none)"
    training_epochs_option = "sparse_epochs"
    Options = SlimmingOptions

    def prepare(self, ctx: PruneContext) -> SlimmingReport:
        trained_lambda = parent_lambda(ctx)
        before = small_gamma_share(ctx.model)
        if trained_lambda > 0:
            return SlimmingReport(gamma_below_1e_2_before=before, parent_slimming_lambda=trained_lambda)
        epochs = self.config.sparse_epochs
        lam = -1.0 if self.config.slimming_lambda is None else self.config.slimming_lambda
        if epochs == 0:
            return SlimmingReport(gamma_below_1e_2_before=before, sparse_epochs=0,
                                  warning="parent trained without --slimming-lambda; pruned on the raw |gamma|")
        if ctx.fit is None:
            raise ConfigError("slimming needs a sparse phase on training data: pass a dataset, or --sparse-epochs 0")
        penalty = SparsePenalty(lam)
        ctx.fit(TrainHooks(regularize=penalty, on_fit_start=penalty.on_fit_start), epochs)
        ctx.model.eval()
        lam = penalty.lam
        after = small_gamma_share(ctx.model)
        report = SlimmingReport(sparse_phase=True, extra_epochs=epochs, gamma_below_1e_2_before=before,
                                gamma_below_1e_2_after=after, sparse_epochs=epochs, slimming_lambda=lam)
        if after < WARN_SHARE:
            report.warning = (f"slimming: after {epochs} sparse epochs at lambda {lam:g} only {after:.1%} of |gamma| "
                              f"are below {SMALL_GAMMA:g} (before: {before:.1%}): raise slimming_lambda or "
                              "sparse_epochs")
            log(f"warning: {report.warning}")
        return report

    def score(self, ctx: PruneContext) -> Scores:
        scores = {g.name: mean_over_members([bn.weight.detach().abs() for _, bn in g.bns if bn.weight is not None])
                  for g in ctx.groups if any(bn.weight is not None for _, bn in g.bns)}
        unscored = [g.name for g in ctx.groups if g.name not in scores]
        return Scores(scores, SlimmingScores(unscored or None))
