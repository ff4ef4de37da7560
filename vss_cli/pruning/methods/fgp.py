"""`fgp`: Feature-Gradient-Prune (Lv et al., "Feature-Gradient-Prune: ...", arXiv 2411.12781).

Per class Grad-CAM evidence. For every minibatch and every class d present in its labels, the target
is d's logit ("out") summed over the pixels labelled d; for each group's feature map A and its
gradient G = ∂target/∂A, the channel's heat, averaged over space and summed over images, is Score(c, d):

  `heat=gradcam` (default): ReLU(ᾱ_c · A_c) with ᾱ_c = the spatial mean of G_c, Grad-CAM's channel
      weight (Selvaraju et al., ICCV 2017), which the FGP paper's heatmap H = ReLU(Σ_m G^m F^m) builds on;
  `heat=elementwise`: ReLU(A_c ⊙ G_c), pixel by pixel (vss ≤ 0.1): it also credits a channel whose
      gradient changes sign over the image, where Grad-CAM's pooled weight cancels.

  `features=conv` (default): A = the output of the group's convolutions, "the feature map produced by
      the m-th kernel" as the paper writes and where Grad-CAM reads its activations;
  `features=bn`: A = the group's BatchNorm outputs (post-BN, pre-activation; vss ≤ 0.1). The two differ
      by BN's shift β: the gradient only rescales, the feature moves.

One forward per minibatch, then one backward per class present, with gradients taken only against
the captured features (`torch.autograd.grad`), so no parameter's `.grad` is touched; the model runs in
eval mode, so BatchNorm statistics are untouched. A group with several convs / BNs uses the mean of
their heats; a group without BatchNorm is read at its convs under either `features`.

Class-normalised support. Score(·, d) is divided by its sum over the layer's channels (each class
becomes a distribution over the channels; the sum rather than the max, so a class whose evidence is
spread over many channels is not inflated), then S(c) = mean over the classes seen in the samples.
A frequent class thus weighs as much as a rare one, however many pixels it covers. A channel whose
gradient is zero for every class has S = 0 (layers feeding only an auxiliary head: pruned first,
which costs nothing at inference).

Which classes, which pixels (`mask`, `only_class`). METHODS.md: every class present in the labels,
each over the pixels labelled with it (`mask=labels`, `only_class` None, the default). The official
test script instead scores one chosen class against the model's predicted mask (pytorch-grad-cam's
segmentation target: the class logit summed over the pixels predicted as that class):
`mask=predicted` takes the pixels the model predicts as d, `only_class=K` scores class K alone.

Allocation (`share`, the paper's rule, registered here): per layer keep the highest-S channels whose
cumulative share of ΣS first reaches T. Under a budget T is the knob the budget search moves
(T = 1 − t: t = 0 keeps every layer whole), so `--allocation paper --budget macs 0.5` meets the budget
with fgp's own per-layer rule; with `--option fgp:share=T` the widths are fixed at that T (paper
0.8) and the budget is not applied. Widths are then rounded to `--round-to`; at least one channel
per layer stays (the paper sets no other floor). A layer with no evidence at all is kept whole.
Under `--allocation uniform|global` S is the score.

Options: `share` = None (T searched by the budget; 0.8 fixes the paper's T), `heat` = gradcam,
`features` = conv, `mask` = labels, `only_class` = None (above).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vss_cli.engine.hooks import capture_hook, eval_mode, forward_hooks
from vss_cli.errors import ConfigError
from vss_cli.pruning.base import PruneContext, PruningMethod, register_method
from vss_cli.pruning.features import channel_outputs, scoring_batches
from vss_cli.pruning.method_options import MethodOptions, MethodReport, Scores, option
from vss_cli.pruning.planner import Allocation, AllocationRequest, register_allocation
from vss_cli.pruning.surgery import LayerGroup


def classes_present(labels: torch.Tensor, num_classes: int) -> list[int]:
    present = torch.unique(labels)
    return [int(d) for d in present if 0 <= int(d) < num_classes]


def class_target(logits: torch.Tensor, labels: torch.Tensor, d: int) -> torch.Tensor:
    """Class d's logit summed over the pixels labelled d (or predicted d, given the predicted mask)."""
    return (logits[:, d] * (labels == d)).sum()


HEATS = ("gradcam", "elementwise")
FEATURES = ("conv", "bn")
MASKS = ("labels", "predicted")


def heat(feature: torch.Tensor, grad: torch.Tensor | None, mode: str = "gradcam") -> torch.Tensor:
    """Σ over images of the spatial mean of the channel's heat map: one value per channel.

    gradcam: ReLU(mean_space(grad) · feature); elementwise: ReLU(feature ⊙ grad)."""
    if grad is None:
        return torch.zeros(feature.shape[1], device=feature.device)
    weight = grad.mean((2, 3), keepdim=True) if mode == "gradcam" else grad
    return F.relu(feature.detach() * weight).mean((2, 3)).sum(0)


def observed_modules(group: LayerGroup, features: str) -> list:
    """Where a group's channels are read: its convs' outputs, or its BNs' (convs when it has none)."""
    return channel_outputs(group) if features == "bn" else [m for _, m in group.convs]


class ClassEvidence:
    """Score(c, d) per group, accumulated over minibatches."""

    def __init__(self, groups: list[LayerGroup], num_classes: int, heat: str = "gradcam",
                 features: str = "conv", mask: str = "labels", only_class: int | None = None) -> None:
        self.groups = groups
        self.heat, self.features, self.mask, self.only_class = heat, features, mask, only_class
        self.scores = {g.name: torch.zeros(g.size, num_classes) for g in groups}
        self.seen = torch.zeros(num_classes, dtype=torch.bool)

    def add_minibatch(self, model, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        captured = {g.name: [] for g in self.groups}
        hooks = [(m, capture_hook(captured[g.name])) for g in self.groups for m in observed_modules(g, self.features)]
        with forward_hooks(hooks), torch.enable_grad():
            logits = model(images.requires_grad_(True))["out"]
            if logits.shape[-2:] != labels.shape[-2:]:
                logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        order = [(name, i) for name, feats in captured.items() for i in range(len(feats))]
        features = [captured[name][i] for name, i in order]
        if self.mask == "predicted":
            labels = logits.detach().argmax(1)
        classes = classes_present(labels, num_classes)
        if self.only_class is not None:
            classes = [d for d in classes if d == self.only_class]
        for k, d in enumerate(classes):
            grads = torch.autograd.grad(class_target(logits, labels, d), features,
                                        retain_graph=k < len(classes) - 1, allow_unused=True)
            per_group: dict[str, list[torch.Tensor]] = {}
            for (name, _), feat, grad in zip(order, features, grads, strict=True):
                per_group.setdefault(name, []).append(heat(feat, grad, self.heat))
            for name, heats in per_group.items():
                self.scores[name][:, d] += torch.stack(heats).mean(0).cpu()
            self.seen[d] = True

    def support(self) -> dict[str, torch.Tensor]:
        """S(c): per-class sum normalisation over the layer's channels, then the mean over seen classes."""
        return {name: class_normalised_support(s[:, self.seen]) for name, s in self.scores.items()}


def class_normalised_support(scores: torch.Tensor) -> torch.Tensor:
    """[C, D] Score(c, d) -> [C] mean over d of Score(c, d)/Σ_c Score(c, d) (a zero column stays zero)."""
    totals = scores.sum(0, keepdim=True)
    shares = torch.where(totals > 0, scores / totals.clamp_min(torch.finfo(scores.dtype).tiny), 0.0)
    return shares.mean(1) if shares.shape[1] else torch.zeros(scores.shape[0])


def cumulative_share_width(support: torch.Tensor, share: float) -> int:
    """How many of the highest-S channels first reach `share` of ΣS (all of them when ΣS = 0)."""
    total = float(support.sum())
    if total <= 0:
        return support.numel()
    cumulative = torch.cumsum(torch.sort(support.double(), descending=True).values, 0) / total
    reached = torch.nonzero(cumulative >= share - 1e-12)
    return int(reached[0]) + 1 if reached.numel() else support.numel()


@dataclass(frozen=True)
class FGPOptions(MethodOptions):
    share: float | None = option(None, "cumulative share T of support kept per layer: None = searched by the "
                                 "budget; a value fixes the paper's rule (paper: 0.8)")
    heat: str = option("gradcam", "channel heat: Grad-CAM's pooled gradient times the feature, or elementwise",
                       choices=HEATS)
    features: str = option("conv", "where a channel is read: its conv output (Grad-CAM's activations) or its BN "
                           "output", choices=FEATURES)
    mask: str = option("labels", "pixels of class d: labelled d (METHODS.md) or predicted d (official test script)",
                       choices=MASKS)
    only_class: int | None = option(None, "score this class alone (official test script: one chosen class); "
                                    "None = every class present")

    def check(self) -> None:
        if self.share is not None and not 0 < self.share <= 1:
            raise ConfigError(f"fgp: share {self.share} is outside (0, 1]: pass a share such as 0.8")
        if self.only_class is not None and self.only_class < 0:
            raise ConfigError(f"fgp: only_class {self.only_class} is not a class index")


@dataclass
class FGPReport(MethodReport):
    fgp_minibatches: int
    fgp_classes: int
    fgp_heat: str
    fgp_features: str
    fgp_mask: str


@register_method
class FGP(PruningMethod):
    """Class-normalised Grad-CAM support of each channel (Lv et al., 2024)."""

    name = "fgp"
    paper_allocation = "share"  # per layer the channels reaching the cumulative share T (registered below)
    paper = "Lv et al., Feature-Gradient-Prune, arXiv 2411.12781 (FGP-code/FGP)"
    scores_need = "data, gradients, per class"
    needs_data = True
    Options = FGPOptions

    def score(self, ctx: PruneContext) -> Scores:
        cfg = self.config
        if cfg.only_class is not None and cfg.only_class >= ctx.num_classes:
            raise ConfigError(f"fgp: only_class {cfg.only_class} is not a class of this dataset "
                              f"({ctx.num_classes} classes)")
        evidence = ClassEvidence(ctx.groups, ctx.num_classes, cfg.heat, cfg.features, cfg.mask, cfg.only_class)
        minibatches = 0
        with eval_mode(ctx.model):
            for images, labels in scoring_batches(ctx, "fgp"):
                evidence.add_minibatch(ctx.model, images, labels, ctx.num_classes)
                minibatches += 1
        if not bool(evidence.seen.any()):
            raise ConfigError("fgp found no labelled pixels in the scoring images: pass more --samples")
        return Scores(evidence.support(), FGPReport(minibatches, int(evidence.seen.sum()), cfg.heat, cfg.features,
                                                    cfg.mask))


@register_allocation("share")
def share_rule(req: AllocationRequest) -> Allocation:
    """Per layer the top channels whose cumulative share of support reaches T: fixed at fgp's `share`
    when given, else T = 1 − t (t = 0 keeps every layer whole) for the budget search."""
    share = req.method.config.share if isinstance(req.method, FGP) else None
    floor = {g.name: 1 for g in req.groups}
    if share is not None:
        widths = {g.name: cumulative_share_width(req.scores[g.name], share) for g in req.groups}
        return Allocation("share", lambda t: dict(widths), floor, fixed=True)

    def keep(t: float) -> dict[str, int]:
        if t <= 0:
            return {g.name: g.size for g in req.groups}
        return {g.name: cumulative_share_width(req.scores[g.name], 1.0 - t) for g in req.groups}

    return Allocation("share", keep, floor)
