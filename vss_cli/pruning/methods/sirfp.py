"""`sirfp`: Wu et al., "Structural Pruning via Spatial-aware Information Redundancy for Semantic
Segmentation" (AAAI 2025).

Redundancy graph. For every scoring image and every channel of a group's BatchNorm output
(post-BN, pre-activation, full resolution), the spatial map is flattened and L1-normalised (absolute
values sum to 1; an all-zero map stays zero). The edge weight between channels i and j is the inner
product of their normalised maps, averaged over the images (the official code keeps an EMA over
training steps instead; with a fixed image set the plain mean is the same statistic). A group with
several BNs (a residual stream) uses the mean of their matrices. The C×C sum is accumulated inside the
forward hook, a few images at a time (one when maps are large), so no feature map is kept and
512×1024 inputs fit.

Maximum-edge-weight clique, solved greedily (paper §3): the channels to prune are the most mutually
redundant ones, so repeatedly remove the channel whose summed |similarity| to the channels still kept
is largest. Edge weights are absolute values (an anti-correlated map is as redundant as a correlated
one, as in the official code); self-loops are excluded (the official code also counts a channel's
similarity with itself, which favours spatially diffuse maps; a clique's weight has no self-loops).
A channel's redundancy rank is its removal position: removed first = least important.

Spatial detail (backbone layers only, paper §3.3): per channel, the spatial standard deviation of the
Sobel gradient magnitude of its map (replicate padding, so image borders are not edges), averaged
over the images; weight `detail_weight` = 0.4 as in the official code, 0 in the decoder head.

Combination. The official code adds 0.4·detail to minus the redundancy at removal time and thresholds
those raw values; their scales differ by orders of magnitude (inner products of L1-normalised maps
shrink like 1/(H·W), detail grows with activation size), so in vss both terms are put on [0, 1] per
layer first: importance = removal position/(C−1) + detail_weight · detail/max(detail of the layer).
Within a layer the greedy order is unchanged (the redundancy at removal time never increases along
the removals, so position and the official value order channels alike).

Planning (official code): global thresholds with the backbone and the head ranked separately, each
region losing `ratio` of its channels, at least `min_keep` (2%) of every layer kept.

Options: `detail_weight` = 0.4, `min_keep` = 0.02.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vss_cli.errors import ConfigError
from vss_cli.pruning.base import PruneContext, PruningMethod, register_method
from vss_cli.pruning.features import channel_outputs, eval_mode, forward_hooks, observer_hook, scoring_batches
from vss_cli.pruning.planner import global_threshold_plan
from vss_cli.pruning.surgery import LayerGroup

CHUNK_ELEMENTS = 1 << 24  # feature values processed at once (a few images, or one 512x1024 map)
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def l1_normalised_maps(features: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, H·W] with each map's absolute values summing to 1 (zero maps stay zero)."""
    flat = features.flatten(2).float()
    mass = flat.abs().sum(2, keepdim=True)
    return flat / mass.clamp_min(torch.finfo(flat.dtype).tiny)


def spatial_similarity(features: torch.Tensor) -> torch.Tensor:
    """C×C inner products of the L1-normalised spatial maps, summed over the images of [N, C, H, W]."""
    maps = l1_normalised_maps(features)
    return torch.bmm(maps, maps.transpose(1, 2)).sum(0)


def sobel_detail(features: torch.Tensor) -> torch.Tensor:
    """Per image and channel of [N, C, H, W]: spatial std of the Sobel gradient magnitude -> [N, C]."""
    n, c, h, w = features.shape
    kernels = torch.stack([SOBEL_X, SOBEL_X.T]).to(features.device).unsqueeze(1).repeat(c, 1, 1, 1)
    padded = F.pad(features.float(), (1, 1, 1, 1), mode="replicate")
    grads = F.conv2d(padded, kernels, groups=c).view(n, c, 2, h, w)
    magnitude = grads.pow(2).sum(2).sqrt()
    return magnitude.flatten(2).std(2, unbiased=False)


def image_chunks(output: torch.Tensor, budget: int = CHUNK_ELEMENTS) -> list[torch.Tensor]:
    """Consecutive slices of a batch holding at most `budget` elements (at least one image each)."""
    per_image = max(1, output[0].numel())
    step = max(1, budget // per_image)
    return list(torch.split(output, step))


@dataclass
class RedundancyStats:
    """Sums over scoring images of one BN output: the similarity matrix and the detail term."""

    with_detail: bool
    similarity: torch.Tensor | None = None
    detail: torch.Tensor | None = None
    images: int = 0

    def add(self, output: torch.Tensor) -> None:
        for chunk in image_chunks(output):  # bounded extra memory: a few small maps or one large one
            sim = spatial_similarity(chunk)
            self.similarity = sim if self.similarity is None else self.similarity + sim
            if self.with_detail:
                det = sobel_detail(chunk).sum(0)
                self.detail = det if self.detail is None else self.detail + det
            self.images += chunk.shape[0]

    def mean_similarity(self, size: int) -> torch.Tensor:
        return self.similarity.cpu() / self.images if self.images else torch.zeros(size, size)

    def mean_detail(self, size: int) -> torch.Tensor:
        return self.detail.cpu() / self.images if self.detail is not None and self.images else torch.zeros(size)


def greedy_removal_order(similarity: torch.Tensor) -> torch.Tensor:
    """Position at which each channel leaves the greedy max-edge-weight clique peeling.

    Repeatedly removes the channel whose summed |similarity| to the other channels still kept is
    largest (ties: lowest index); position 0 = removed first = most redundant.
    """
    weights = similarity.detach().double().abs().clone()
    weights.fill_diagonal_(0.0)
    c = weights.shape[0]
    kept = torch.ones(c, dtype=torch.bool)
    load = weights.sum(1)
    position = torch.empty(c, dtype=torch.long)
    for step in range(c):
        candidate = torch.where(kept, load, torch.full_like(load, -float("inf")))
        j = int(torch.argmax(candidate))
        position[j] = step
        kept[j] = False
        load -= weights[:, j]
    return position


def combine(position: torch.Tensor, detail: torch.Tensor, detail_weight: float) -> torch.Tensor:
    """Importance = removal position/(C−1) + detail_weight·detail/max(detail), both per layer."""
    c = position.numel()
    redundancy_rank = position.float() / max(c - 1, 1)
    top = float(detail.max()) if detail.numel() else 0.0
    detail_term = detail.float() / top if top > 0 else torch.zeros(c)
    return redundancy_rank + detail_weight * detail_term


def group_score(stats: list[RedundancyStats], size: int, detail_weight: float) -> torch.Tensor:
    similarity = torch.stack([s.mean_similarity(size) for s in stats]).mean(0)
    detail = torch.stack([s.mean_detail(size) for s in stats]).mean(0)
    return combine(greedy_removal_order(similarity), detail, detail_weight)


def region_detail_weight(group: LayerGroup, detail_weight: float) -> float:
    return detail_weight if group.region == "backbone" else 0.0


@register_method
class SIRFP(PruningMethod):
    """Greedy max-edge-weight clique on spatial-map similarity, plus backbone spatial detail (Wu et al., 2025)."""

    name = "sirfp"
    paper_allocation = "regions"  # raw thresholds, backbone and head separately (official code)
    needs_data = True
    normalize = False  # both terms are already on [0, 1] per layer
    options = {"detail_weight": 0.4, "min_keep": 0.02}

    def score(self, ctx: PruneContext) -> dict[str, torch.Tensor]:
        weight = float(self.opts["detail_weight"])
        if weight < 0:
            raise ConfigError(f"sirfp: detail_weight {weight} must be 0 or more (paper: 0.4)")
        stats = {g.name: [RedundancyStats(with_detail=region_detail_weight(g, weight) > 0) for _ in channel_outputs(g)]
                 for g in ctx.groups}
        hooks = [(module, observer_hook(s.add))
                 for g in ctx.groups for module, s in zip(channel_outputs(g), stats[g.name], strict=True)]
        with eval_mode(ctx.model), forward_hooks(hooks), torch.no_grad():
            for images, _ in scoring_batches(ctx, "sirfp"):
                ctx.model(images)
        if not any(s.images for ss in stats.values() for s in ss):
            raise ConfigError("sirfp saw no images: pass --samples N with N > 0")
        ctx.notes["sirfp_images"] = max(s.images for ss in stats.values() for s in ss)
        return {g.name: group_score(stats[g.name], g.size, region_detail_weight(g, weight)) for g in ctx.groups}

    def plan(self, ctx: PruneContext, scores: dict[str, torch.Tensor]) -> dict[str, list[int]]:
        """Backbone and head thresholded separately, each losing `ratio` of its channels."""
        keep = float(self.opts["min_keep"])
        if not 0 < keep < 1:
            raise ConfigError(f"sirfp: min_keep {keep} must be in (0, 1) (paper: 0.02)")
        plan: dict[str, list[int]] = {}
        for region in sorted({g.region for g in ctx.groups}):
            members = [g for g in ctx.groups if g.region == region]
            plan.update(global_threshold_plan(members, scores, ctx.ratio, round_to=ctx.round_to,
                                              normalize=False, max_layer_ratio=1 - keep))
        return plan
