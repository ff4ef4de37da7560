"""`sirfp`: Wu et al., "Structural Pruning via Spatial-aware Information Redundancy for Semantic
Segmentation" (AAAI 2025); computed as the official code does (dywu98/SIRFP: `pruners/graph_pruner.py`,
`GraphEdgePruner` with the `graph_edge_pruning` statistics; `prune_graph_edge.py` drives it).

Statistics, per BatchNorm output (post-BN, pre-activation, full resolution), per forward pass:
  * similarity: each channel's map flattened and divided by its L1 norm + 1e-5; per image the C×C
    matrix of inner products, averaged over the images of the batch;
  * edge: per image and channel the spatial standard deviation (population) of the gradient
    magnitude √(gx² + gy²), with the official kernel x/(x² + y²) on a 3×3 grid (the Sobel kernel
    halved: [[−½, 0, ½], [−1, 0, 1], [−½, 0, ½]] and its transpose), zero padding 1; averaged over
    the images of the batch;
  * both kept as an exponential moving average over the passes, s ← r·s + (1 − r)·batch value, from
    s = 0 with r = 0.99 (`average=ema`, `ema_decay`), as the official training-time hook does;
    `average=mean` takes the plain mean over the images instead.
A group with no BatchNorm is read at its convs' outputs. The C×C sum is accumulated inside the hook
a few images at a time (one when maps are large), so no feature map is kept and 512×1024 inputs fit.

Score (official `get_para_score`), per BN: start from `detail_weight`·edge (0.4) in the backbone and
0 elsewhere; then C times take the channel still present with the largest load — its summed
|similarity| to the channels still present, its own diagonal included — subtract that load from its
score, and remove its row and column (the greedy peel of the maximum-edge-weight clique). The score
stays on its raw scale: 0.4·edge − load in the backbone, −load in the head; low = pruned first.

Allocation (`regions`, official `get_thresh` / `gen_channel_mask`): one threshold on the raw scores
over all backbone channels, one over all other channels, each region losing the same share t (the
knob the budget search moves, as `prune_graph_edge.py` steps `global_percent` until the FLOPs match),
and every layer keeping at least max(1, int(`layer_keep`·C)) of its best channels (0.01, the
`GraphEdgePruner` default). The backbone comes from the model's declared structure (`LayerGroup.region`),
never from module names; a model that declares no structure has no backbone: every group is scored
and thresholded as the head (no edge term), and the result says so.

Remaining departures, each matched or an option whose default is the official one:
  * statistics gathered during training (official: train-mode BN on augmented minibatches, EMA over
    iterations) vs vss: over the fixed `--samples` images of the training split without augmentation,
    BN normalising with each minibatch's statistics (`bn_stats=batch`, official) without updating the
    running statistics; `bn_stats=running` uses the running statistics (eval mode);
  * `average=ema` (official) | `mean`; EMA from zero scales every statistic by the same 1 − r^n, so the
    thresholds' order matches the mean's up to the per-pass weighting;
  * the exact maximum-edge-weight clique solver in `mewc/exact.py` is not called by the official
    pruning pipeline (only the greedy peel is): matched, no option;
  * ties in the peel: the lowest channel index (the official `torch.sort` leaves ties unordered);
  * `prune_graph_edge.py` passes `layer_keep=0.02`; the class default 0.01 is used (`layer_keep`);
  * a group of several coupled BNs (a residual stream) takes the mean of its members' official scores;
    the official code scores each BN alone and leaves coupled layers to its model's ignore list.
  * the official square root of a variance that rounds below zero gives NaN; here it is clamped to 0.

Options: `detail_weight` = 0.4, `layer_keep` = 0.01, `average` = ema, `ema_decay` = 0.99,
`bn_stats` = batch.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vss_cli.engine.hooks import batch_statistics, eval_mode, forward_hooks, observer_hook
from vss_cli.errors import ConfigError
from vss_cli.pruning.base import PruneContext, PruningMethod, mean_over_members, register_method
from vss_cli.pruning.features import channel_outputs, scoring_batches
from vss_cli.pruning.method_options import MethodOptions, MethodReport, Scores, option
from vss_cli.pruning.planner import Allocation, AllocationRequest, Threshold, register_allocation
from vss_cli.pruning.surgery import LayerGroup

CHUNK_ELEMENTS = 1 << 24  # feature values processed at once (a few images, or one 512x1024 map)
L1_EPS = 1e-5  # official: map / (L1 norm + 1e-5)
BACKBONE = "backbone"
AVERAGES = ("ema", "mean")
BN_STATS = ("batch", "running")


def official_gradient_kernel() -> torch.Tensor:
    """The official `get_sobel_kernel(3)`: x / (x² + y²) on the 3×3 grid, centre column divided by 1."""
    r = torch.tensor([-1.0, 0.0, 1.0])
    y, x = torch.meshgrid(r, r, indexing="ij")
    denominator = x**2 + y**2
    denominator[:, 1] = 1.0
    return x / denominator


def l1_normalised_maps(features: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, H·W], each map divided by its L1 norm + 1e-5 (official)."""
    flat = features.flatten(2).float()
    return flat / (flat.abs().sum(2, keepdim=True) + L1_EPS)


def spatial_similarity(features: torch.Tensor) -> torch.Tensor:
    """C×C inner products of the L1-normalised spatial maps, summed over the images of [N, C, H, W]."""
    maps = l1_normalised_maps(features)
    return torch.bmm(maps, maps.transpose(1, 2)).sum(0)


def edge_detail(features: torch.Tensor) -> torch.Tensor:
    """Per image and channel of [N, C, H, W]: spatial std of the official gradient magnitude -> [N, C]."""
    n, c, h, w = features.shape
    kx = official_gradient_kernel().to(features.device)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1).repeat(c, 1, 1, 1)
    grads = F.conv2d(features.float(), kernels, padding=1, groups=c).view(n, c, 2, h, w)
    magnitude = grads.pow(2).sum(2).sqrt().flatten(2)
    variance = magnitude.pow(2).mean(2) - magnitude.mean(2).pow(2)
    return variance.clamp_min(0.0).sqrt()


def image_chunks(output: torch.Tensor, budget: int = CHUNK_ELEMENTS) -> list[torch.Tensor]:
    """Consecutive slices of a batch holding at most `budget` elements (at least one image each)."""
    per_image = max(1, output[0].numel())
    step = max(1, budget // per_image)
    return list(torch.split(output, step))


@dataclass
class RedundancyStats:
    """One BN output's similarity matrix and edge term, averaged per pass and kept as an EMA (decay
    `ema_decay`) or a plain mean over images (`ema_decay` None)."""

    with_edge: bool
    ema_decay: float | None = 0.99
    similarity: torch.Tensor | None = None
    edge: torch.Tensor | None = None
    images: int = 0
    _batch_sim: torch.Tensor | None = None
    _batch_edge: torch.Tensor | None = None
    _batch_images: int = 0

    def add(self, output: torch.Tensor) -> None:
        """Accumulate one forward pass's output (called by the hook), then fold it in."""
        for chunk in image_chunks(output):  # bounded extra memory: a few small maps or one large one
            sim = spatial_similarity(chunk)
            self._batch_sim = sim if self._batch_sim is None else self._batch_sim + sim
            if self.with_edge:
                det = edge_detail(chunk).sum(0)
                self._batch_edge = det if self._batch_edge is None else self._batch_edge + det
            self._batch_images += chunk.shape[0]
        self._fold()

    def _fold(self) -> None:
        n = self._batch_images
        if self.ema_decay is None:  # plain mean: keep sums over images
            self.similarity = self._add(self.similarity, self._batch_sim, 1.0, 1.0)
            self.edge = self._add(self.edge, self._batch_edge, 1.0, 1.0)
        else:
            r = self.ema_decay
            self.similarity = self._add(self.similarity, self._batch_sim / n, r, 1 - r)
            self.edge = self._add(self.edge, None if self._batch_edge is None else self._batch_edge / n, r, 1 - r)
        self.images += n
        self._batch_sim, self._batch_edge, self._batch_images = None, None, 0

    @staticmethod
    def _add(state, value, keep: float, new: float):
        if value is None:
            return state
        return value.mul(new) if state is None else state.mul(keep) + value.mul(new)

    def _scale(self) -> float:
        return 1.0 / self.images if self.ema_decay is None else 1.0

    def mean_similarity(self, size: int) -> torch.Tensor:
        return self.similarity.cpu().double() * self._scale() if self.images else torch.zeros(size, size).double()

    def mean_edge(self, size: int) -> torch.Tensor:
        if self.edge is None or not self.images:
            return torch.zeros(size).double()
        return self.edge.cpu().double() * self._scale()


def official_score(similarity: torch.Tensor, edge: torch.Tensor, detail_weight: float) -> torch.Tensor:
    """`get_para_score`: detail_weight·edge minus each channel's load when the greedy peel removes it.

    The peel repeatedly removes the channel still present whose summed |similarity| to the channels
    still present (its own diagonal included) is largest (ties: lowest index)."""
    weights = similarity.detach().double().abs()
    score = detail_weight * edge.detach().double().clone()
    c = weights.shape[0]
    present = torch.ones(c, dtype=torch.bool)
    load = weights.sum(1)
    for _ in range(c):
        j = int(torch.argmax(torch.where(present, load, torch.full_like(load, -float("inf")))))
        score[j] -= load[j]
        present[j] = False
        load -= weights[:, j]
    return score


def region_detail_weight(group: LayerGroup, detail_weight: float) -> float:
    return detail_weight if group.region == BACKBONE else 0.0


def group_score(stats: list[RedundancyStats], size: int, detail_weight: float) -> torch.Tensor:
    """The mean of the members' official scores (one member: exactly its score)."""
    return mean_over_members([official_score(s.mean_similarity(size), s.mean_edge(size), detail_weight)
                              for s in stats]).double()


def forward(model, images: torch.Tensor) -> None:
    """One scoring pass; batch statistics of a single value per channel are refused in one line."""
    try:
        model(images)
    except ValueError as exc:
        if "more than 1 value per channel" not in str(exc):
            raise
        raise ConfigError("sirfp: bn_stats=batch normalises with each minibatch's statistics, and a layer here sees "
                          "one value per channel: pass a larger --batch-size or --option bn_stats=running") from None


@dataclass(frozen=True)
class SIRFPOptions(MethodOptions):
    detail_weight: float = option(0.4, "weight of the edge (spatial detail) term in the backbone (official: 0.4)")
    layer_keep: float = option(0.01, "fewest channels a layer keeps, as a share, at least one (official: 0.01)")
    average: str = option("ema", "statistics over passes: EMA from zero (official) or the plain mean",
                          choices=AVERAGES)
    ema_decay: float = option(0.99, "EMA decay r (official: 0.99)")
    bn_stats: str = option("batch", "BN while scoring: each minibatch's statistics (official, train-mode BN; "
                           "running statistics untouched) or the running ones", choices=BN_STATS)

    def check(self) -> None:
        if self.detail_weight < 0:
            raise ConfigError(f"sirfp: detail_weight {self.detail_weight} must be 0 or more (official: 0.4)")
        if not 0 < self.layer_keep < 1:
            raise ConfigError(f"sirfp: layer_keep {self.layer_keep} must be in (0, 1) (official: 0.01)")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"sirfp: ema_decay {self.ema_decay} must be in [0, 1) (official: 0.99)")


@dataclass
class SIRFPReport(MethodReport):
    sirfp_images: int
    sirfp_no_backbone: str | None = None


@register_method
class SIRFP(PruningMethod):
    """Official SIRFP score: 0.4·edge − greedy clique load in the backbone, −load elsewhere (Wu et al., 2025)."""

    name = "sirfp"
    paper_allocation = "regions"  # raw thresholds, backbone and the rest separately (official code)
    paper = "Wu et al., Structural Pruning via Spatial-aware Information Redundancy for Semantic Segmentation, " \
            "AAAI 2025 (dywu98/SIRFP)"
    scores_need = "data (feature maps)"
    needs_data = True
    normalize = False  # raw scores, thresholded per region
    Options = SIRFPOptions

    def score(self, ctx: PruneContext) -> Scores:
        cfg = self.config
        decay = cfg.ema_decay if cfg.average == "ema" else None
        stats = {g.name: [RedundancyStats(region_detail_weight(g, cfg.detail_weight) > 0, decay)
                          for _ in channel_outputs(g)] for g in ctx.groups}
        hooks = [(module, observer_hook(s.add))
                 for g in ctx.groups for module, s in zip(channel_outputs(g), stats[g.name], strict=True)]
        statistics = batch_statistics(ctx.model) if cfg.bn_stats == "batch" else nullcontext()
        with eval_mode(ctx.model), statistics, forward_hooks(hooks), torch.no_grad():
            for images, _ in scoring_batches(ctx, "sirfp"):
                forward(ctx.model, images)
        if not any(s.images for ss in stats.values() for s in ss):
            raise ConfigError("sirfp saw no images: pass --samples N with N > 0")
        report = SIRFPReport(max(s.images for ss in stats.values() for s in ss))
        if not any(g.region == BACKBONE for g in ctx.groups):
            report.sirfp_no_backbone = "the model declares no backbone: no edge term, one region"
        return Scores({g.name: group_score(stats[g.name], g.size, region_detail_weight(g, cfg.detail_weight)).float()
                       for g in ctx.groups}, report)


def layer_floor(size: int, layer_keep: float) -> int:
    """Official `min_channel_num`: int(C·layer_keep), at least 1."""
    return min(size, max(1, int(size * layer_keep)))


@register_allocation("regions")
def regions_rule(req: AllocationRequest) -> Allocation:
    """Raw thresholds, one over the backbone's channels and one over the rest, both at t; every layer
    keeps at least max(1, int(layer_keep·C))."""
    keep = (req.method.config if isinstance(req.method, SIRFP) else SIRFPOptions()).layer_keep
    floor = {g.name: layer_floor(g.size, keep) for g in req.groups}
    regions = [[g for g in req.groups if (g.region == BACKBONE) == is_backbone] for is_backbone in (True, False)]
    parts = [Threshold(members, req.scores, "none", floor) for members in regions if members]
    return Allocation("regions", lambda t: {k: v for p in parts for k, v in p.keep(t).items()}, floor)
