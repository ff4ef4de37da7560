"""`slimming`: Network Slimming (Liu et al., "Learning Efficient Convolutional Networks through Network
Slimming", ICCV 2017).

Training with an L1 penalty λ·Σ|γ| on every BatchNorm scale pushes unimportant channels' γ towards
zero; pruning then removes the channels with the smallest |γ|, ranked globally across layers on the
raw values (`normalize = False`: the penalty makes γ comparable between layers). A group's score is
the mean |γ| over its BN members. Groups with no BatchNorm have no γ: slimming leaves them unpruned
(the paper prunes BN-scaled channels only) and lists them in the run's notes.

If the parent run was trained without `--slimming-lambda`, `prepare()` first runs a short sparse phase
through the one training loop (`ctx.fit` with `slimming_regularizer`, the subgradient λ·sign(γ) added
after backward) and records it in the notes.

Options:
  `slimming_lambda` = 1e-4: λ of the sparse phase (the paper: 1e-4 for VGGNet, 1e-5 for ResNet and
      DenseNet; 1e-4 is used by default because the short phase has few steps to move γ).
  `sparse_epochs` = 2: length of that phase; the paper trains 160 epochs with sparsity from scratch,
      so this is a short-budget stand-in. 0 prunes on the raw |γ| and says so in the notes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from vss_cli.engine.train import TrainHooks
from vss_cli.errors import ConfigError
from vss_cli.pruning.base import PruneContext, PruningMethod, mean_over_members, register_method


def bn_l1_subgradient(model: nn.Module, lam: float) -> None:
    """Add λ·sign(γ) to every BatchNorm γ gradient: the subgradient of λ·Σ|γ| (Liu et al., 2017)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None and m.weight.grad is not None:
            m.weight.grad.add_(torch.sign(m.weight.detach()), alpha=lam)


def slimming_regularizer(lam: float) -> Callable[[nn.Module], None]:
    """A `TrainHooks.regularize` hook applying `bn_l1_subgradient` with λ = `lam`."""
    return lambda model: bn_l1_subgradient(model, lam)


def parent_lambda(ctx: PruneContext) -> float:
    """λ the parent was trained with (missing = 0: trained without the sparsity penalty)."""
    return float((ctx.parent_config or {}).get("slimming_lambda") or 0.0)


@register_method
class Slimming(PruningMethod):
    """|γ| of the group's BatchNorm channels, ranked globally without normalisation (Liu et al., 2017)."""

    name = "slimming"
    paper_allocation = "global_raw"  # one global threshold on raw |γ| (resprune.py)
    normalize = False
    options = {"slimming_lambda": 1e-4, "sparse_epochs": 2}

    def prepare(self, ctx: PruneContext) -> None:
        trained_lambda = parent_lambda(ctx)
        if trained_lambda > 0:
            ctx.notes.update(sparse_phase=False, parent_slimming_lambda=trained_lambda)
            return
        epochs, lam = int(self.opts["sparse_epochs"]), float(self.opts["slimming_lambda"])
        if epochs < 0 or lam < 0:
            raise ConfigError(f"slimming: --sparse-epochs {epochs} and slimming_lambda {lam} must be 0 or more")
        if epochs == 0:
            ctx.notes.update(sparse_phase=False, sparse_epochs=0,
                             warning="parent trained without --slimming-lambda; pruned on the raw |gamma|")
            return
        if ctx.fit is None:
            raise ConfigError("slimming needs a sparse phase on training data: pass a dataset, or --sparse-epochs 0")
        ctx.fit(TrainHooks(regularize=slimming_regularizer(lam)), epochs)
        ctx.model.eval()
        ctx.notes.update(sparse_phase=True, sparse_epochs=epochs, slimming_lambda=lam)

    def score(self, ctx: PruneContext) -> dict[str, torch.Tensor]:
        scores = {g.name: mean_over_members([bn.weight.detach().abs() for _, bn in g.bns if bn.weight is not None])
                  for g in ctx.groups if any(bn.weight is not None for _, bn in g.bns)}
        unscored = [g.name for g in ctx.groups if g.name not in scores]
        if unscored:
            ctx.notes["unpruned_without_bn"] = unscored
        return scores
