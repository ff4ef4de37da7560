"""The segmentation-specific criteria sirfp and fgp pinned on hand-built cases (dmcp and the run on
every registered model: test_methods_dmcp.py)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
from seg_cases import CLASSES, groups_of, synthetic_batches, tiny_model

from vss_cli.errors import ConfigError
from vss_cli.pruning.base import PruneContext
from vss_cli.pruning.methods.fgp import class_normalised_support, cumulative_share_width
from vss_cli.pruning.methods.sirfp import (
    RedundancyStats,
    edge_detail,
    official_gradient_kernel,
    official_score,
)
from vss_cli.pruning.planner import plan_channels
from vss_cli.pruning.registry import get_method
from vss_cli.pruning.surgery import LayerGroup, output_layers_of

torch.set_num_threads(1)



# ---------------------------------------------------------------------------------------------
# sirfp


def blob(rows: slice, cols: slice) -> torch.Tensor:
    m = torch.zeros(4, 4)
    m[rows, cols] = 1.0
    return m


def peel_order(weights: torch.Tensor) -> list[int]:
    """Channels in the order the official peel removes them: its loads only fall along the peel, so
    ascending −load (the score without edge term) is that order."""
    return torch.argsort(official_score(weights, torch.zeros(weights.shape[0]), 0.0), stable=True).tolist()


def test_sirfp_removes_one_of_two_identical_channels_before_a_distinct_one():
    a = blob(slice(0, 2), slice(0, 2))
    feature = torch.stack([blob(slice(2, 4), slice(2, 4)), a, blob(slice(0, 2), slice(2, 4)), a.clone() * 3])
    stats = RedundancyStats(with_edge=False)
    stats.add(feature.unsqueeze(0))
    scores = official_score(stats.mean_similarity(4), torch.zeros(4), 0.4)
    assert int(scores.argmin()) in (1, 3)  # a copy goes first (the scale does not matter after L1 normalisation)
    assert bool((scores <= 0).all())  # no edge term: minus the load, self-similarity included


def test_sirfp_l1_normalisation_leaves_a_zero_map_at_zero_similarity():
    feature = torch.stack([torch.zeros(4, 4), blob(slice(0, 2), slice(0, 2))])
    stats = RedundancyStats(with_edge=False, ema_decay=None)
    stats.add(feature.unsqueeze(0))
    sim = stats.mean_similarity(2)
    assert torch.equal(sim[0], torch.zeros(2, dtype=sim.dtype))
    assert sim[1, 1].item() == pytest.approx(4 / (4 + 1e-5) ** 2)  # map / (L1 norm + 1e-5), as the official code


def test_sirfp_keeps_an_exponential_moving_average_from_zero_as_the_official_hook():
    stats = RedundancyStats(with_edge=False, ema_decay=0.99)
    first, second = blob(slice(0, 2), slice(0, 2)), blob(slice(0, 4), slice(0, 4))
    for image in (first, second):
        stats.add(image.view(1, 1, 4, 4))
    expected = (0.99 * 0.01 * 4 / (4 + 1e-5) ** 2) + 0.01 * 16 / (16 + 1e-5) ** 2
    assert stats.mean_similarity(1).item() == pytest.approx(expected)


def brute_force_kept_weight(weights: torch.Tensor, keep: int) -> float:
    """Lightest clique of `keep` channels (= the heaviest set of removed edges), by enumeration."""
    return min(sum(float(weights[i, j]) for i, j in itertools.combinations(kept, 2))
               for kept in itertools.combinations(range(weights.shape[0]), keep))


def test_sirfp_greedy_matches_a_brute_force_maximum_weight_clique():
    w = torch.tensor([
        [0.0, 0.9, 0.8, 0.3, 0.1, 0.0],
        [0.9, 0.0, 0.7, 0.2, 0.0, 0.1],
        [0.8, 0.7, 0.0, 0.1, 0.1, 0.0],
        [0.3, 0.2, 0.1, 0.0, 0.2, 0.1],
        [0.1, 0.0, 0.1, 0.2, 0.0, 0.05],
        [0.0, 0.1, 0.0, 0.1, 0.05, 0.0],
    ])
    order = peel_order(w)
    # first removal: the unique channel whose removal leaves the lightest 5-clique
    first = [c for c in range(6)
             if sum(float(w[i, j]) for i, j in itertools.combinations([k for k in range(6) if k != c], 2))
             == pytest.approx(brute_force_kept_weight(w, 5))]
    assert first == [order[0]] == [0]
    # on this graph the greedy peeling is optimal for every number of removals
    for removed in range(1, 6):
        kept = order[removed:]
        greedy = sum(float(w[i, j]) for i, j in itertools.combinations(kept, 2))
        assert greedy == pytest.approx(brute_force_kept_weight(w, 6 - removed), abs=1e-6)


def test_sirfp_edge_uses_the_official_half_sobel_kernel_with_zero_padding():
    assert official_gradient_kernel().tolist() == [[-0.5, 0.0, 0.5], [-1.0, 0.0, 1.0], [-0.5, 0.0, 0.5]]
    flat, texture = torch.ones(8, 8), (torch.arange(64).reshape(8, 8) % 3 == 0).float()
    detail = edge_detail(torch.stack([torch.zeros(8, 8), flat, texture]).unsqueeze(0))[0]
    assert detail[0].item() == 0.0
    assert detail[1].item() > 0  # zero padding: the border of a flat map is an edge, as in the official code
    assert detail[2].item() > 0.1


def test_sirfp_regions_threshold_backbone_and_head_separately():
    def group(name: str, region: str) -> LayerGroup:
        conv = nn.Conv2d(1, 16, 1)
        return LayerGroup(name=name, root=conv, size=16, convs=[(name, conv)], region=region)

    groups = [group("enc", "backbone"), group("dec", "head")]
    scores = {"enc": torch.linspace(1.0, 1.4, 16), "dec": torch.linspace(0.0, 0.3, 16)}
    ctx = PruneContext(model=nn.Identity(), groups=groups, device=torch.device("cpu"), num_classes=2,
                       ratio=0.25, round_to=1)
    plan = plan_channels(get_method("sirfp"), ctx, scores)
    assert plan.removed == {"enc": [0, 1, 2, 3], "dec": [0, 1, 2, 3]}  # one global threshold would take 8 from dec
    assert plan.rule == "regions"


def test_sirfp_scores_a_real_model_without_touching_it():
    model = tiny_model("unet").train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ignored = output_layers_of(model, "unet")
    ctx = PruneContext(model=model, groups=groups_of(model, ignored), device=torch.device("cpu"),
                       num_classes=CLASSES, batch_source=synthetic_batches(4))
    scores = get_method("sirfp").score(ctx)  # bn_stats=batch: train-mode BN, running statistics untouched
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert model.training and all(not m._forward_hooks for m in model.modules())
    assert {g.region for g in ctx.groups} == {"backbone", "head"}
    for g in ctx.groups:
        s = scores[g.name]
        assert s.numel() == g.size and bool(torch.isfinite(s).all())
        if g.region == "head":  # no edge term: minus the load
            assert float(s.max()) < 0


@pytest.mark.heavy
def test_sirfp_scores_cityscapes_resolution_inputs():
    """Full-resolution 512×1024 maps: the similarity is accumulated in the hook, no map is kept."""
    model = tiny_model("unet")
    ignored = output_layers_of(model, "unet")
    images = torch.randn(1, 3, 512, 1024)
    ctx = PruneContext(model=model, groups=groups_of(model, ignored), device=torch.device("cpu"), num_classes=CLASSES,
                       batch_source=lambda: iter([(images, torch.zeros(1, 512, 1024, dtype=torch.long))]))
    scores = get_method("sirfp").score(ctx)
    assert scores.report.sirfp_images == 1 and all(bool(torch.isfinite(s).all()) for s in scores.values())


# ---------------------------------------------------------------------------------------------
# fgp


class TwoPath(nn.Module):
    """conv(3→2) - BN - ReLU - conv(2→2 classes): channel c carries colour c and is class c's logit."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU(inplace=True),
                                  nn.Conv2d(2, 2, 1, bias=False))
        with torch.no_grad():
            self.body[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
            self.body[3].weight.copy_(torch.eye(2).view(2, 2, 1, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)}


def fgp_scores(model: nn.Module, batches, ignored: list[nn.Module], **options) -> dict[str, torch.Tensor]:
    ctx = PruneContext(model=model, groups=groups_of(model, ignored, size=(8, 8)), device=torch.device("cpu"),
                       num_classes=2, batch_source=batches)
    return get_method("fgp", **options).score(ctx)


def rare_class_batches():
    def batches():
        g = torch.Generator().manual_seed(0)
        for _ in range(2):
            labels = torch.zeros(2, 8, 8, dtype=torch.long)
            labels[:, :1, :3] = 1  # class 1 covers 3 of 64 pixels
            labels[:, -1, :] = 255
            yield torch.rand(2, 3, 8, 8, generator=g) + 0.5, labels
    return batches


def test_fgp_class_normalisation_keeps_a_rare_class_channel_from_being_dominated():
    model = TwoPath().eval()
    scores = fgp_scores(model, rare_class_batches(), [model.body[3]])["body.0"]
    assert scores[0].item() == pytest.approx(0.5) and scores[1].item() == pytest.approx(0.5)
    # without normalisation the frequent class would bury channel 1 (hand-built evidence, 20:1)
    raw = torch.tensor([[20.0, 0.0], [0.0, 1.0]])
    assert class_normalised_support(raw).tolist() == pytest.approx([0.5, 0.5])
    assert class_normalised_support(torch.tensor([[1000.0, 0.0], [10.0, 1.0]]))[1] > 0.5


def test_fgp_gives_zero_support_to_a_channel_without_gradient():
    model = TwoPath().eval()
    model.body[3].weight.data[:, 1] = 0.0  # channel 1 reaches no logit
    state = {k: v.clone() for k, v in model.state_dict().items()}
    scores = fgp_scores(model, rare_class_batches(), [model.body[3]])["body.0"]
    assert scores[1].item() == 0.0 and scores[0].item() > 0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and all(not m._forward_hooks for m in model.modules())


def test_fgp_heat_is_relu_of_feature_times_gradient():
    model = TwoPath().eval()
    model.body[3].weight.data.copy_(torch.tensor([[1.0, -1.0], [0.0, 1.0]]).view(2, 2, 1, 1))
    images = torch.rand(1, 3, 8, 8) + 0.5
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    scores = fgp_scores(model, lambda: iter([(images, labels)]), [model.body[3]])["body.0"]
    # only class 0 is present: gradient +1 on channel 0 and -1 on channel 1 (both features positive)
    assert scores.tolist() == pytest.approx([1.0, 0.0])


def test_fgp_share_rule_keeps_the_channels_reaching_the_share():
    support = torch.tensor([0.1, 0.5, 0.1, 0.3])
    assert cumulative_share_width(support, 0.8) == 2
    assert cumulative_share_width(support, 0.81) == 3
    assert cumulative_share_width(torch.zeros(4), 0.8) == 4
    conv = nn.Conv2d(1, 4, 1)
    group = LayerGroup(name="c", root=conv, size=4, convs=[("c", conv)])
    ctx = PruneContext(model=nn.Identity(), groups=[group], device=torch.device("cpu"), num_classes=2, round_to=1)
    plan = plan_channels(get_method("fgp", share=0.8), ctx, {"c": support})
    assert plan.removed == {"c": [0, 2]} and not plan.budget_applied


def test_fgp_heat_modes_differ_when_the_gradient_changes_sign_over_the_image():
    from vss_cli.pruning.methods.fgp import heat

    feature = torch.tensor([[1.0, -1.0], [1.0, 1.0]]).view(1, 2, 1, 2)
    grad = torch.tensor([[1.0, -1.0], [2.0, -1.0]]).view(1, 2, 1, 2)
    assert heat(feature, grad, "elementwise").tolist() == pytest.approx([1.0, 1.0])  # ReLU(F ⊙ G), space mean
    assert heat(feature, grad, "gradcam").tolist() == pytest.approx([0.0, 0.5])  # ReLU(mean(G) · F): 0 and 0.5


def quarter_batches():
    """One 8×8 image: input channel 0 is +1 on the two left columns (labelled class 0) and −1 elsewhere
    (ignored pixels), channel 1 is 1 everywhere; the gradient of class 0 is thus spatially varying."""
    images = torch.zeros(1, 3, 8, 8)
    images[:, 0] = -1.0
    images[:, 0, :, :2] = 1.0
    images[:, 1] = 1.0
    labels = torch.full((1, 8, 8), 255, dtype=torch.long)
    labels[:, :, :2] = 0
    return lambda: iter([(images, labels)])


def quarter_model(shift: float = 0.0) -> nn.Module:
    model = TwoPath().eval()
    with torch.no_grad():
        model.body[3].weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(2, 2, 1, 1))  # class 0 reads both
        model.body[1].bias[0] = shift
    return model


@pytest.mark.parametrize(("heat_mode", "expected"), [("elementwise", [0.5, 0.5]), ("gradcam", [0.2, 0.8])])
def test_fgp_heat_option_on_spatially_varying_gradients(heat_mode, expected):
    # channel 0 lives on a quarter of the image: elementwise 0.25 · 1; Grad-CAM pools its gradient first
    # (ᾱ = 0.25) and then sees the feature on that quarter only, 0.25 · 0.25; channel 1 scores 0.25 both ways
    model = quarter_model()
    scores = fgp_scores(model, quarter_batches(), [model.body[3]], heat=heat_mode, features="bn")["body.0"]
    assert scores.tolist() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(("features", "expected"), [("bn", [0.75, 0.25]), ("conv", [0.5, 0.5])])
def test_fgp_features_option_reads_the_bn_or_the_conv_output(features, expected):
    # BN shifts channel 0 by 2: its BN output is 3 on the labelled quarter, its conv output 1
    model = quarter_model(shift=2.0)
    scores = fgp_scores(model, quarter_batches(), [model.body[3]], heat="elementwise", features=features)["body.0"]
    assert scores.tolist() == pytest.approx(expected, rel=1e-4)


def test_fgp_rejects_an_unknown_heat():
    model = quarter_model()
    with pytest.raises(ConfigError, match="heat=cam is not one of gradcam|elementwise"):
        fgp_scores(model, quarter_batches(), [model.body[3]], heat="cam")




def test_fgp_only_class_scores_that_class_alone_and_predicted_mask_follows_the_model():
    model = TwoPath().eval()
    only = fgp_scores(model, rare_class_batches(), [model.body[3]], only_class=1)["body.0"]
    assert only.tolist() == pytest.approx([0.0, 1.0])  # class 1's logit reads channel 1 only
    # every pixel predicted as class 0 or 1 by the colour it carries: both classes get scored
    predicted = fgp_scores(model, rare_class_batches(), [model.body[3]], mask="predicted")["body.0"]
    assert float(predicted.sum()) == pytest.approx(1.0) and bool((predicted > 0).all())


def test_sirfp_batch_statistics_of_one_value_per_channel_fail_in_one_line():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 4, 1),
                          nn.BatchNorm2d(4))
    wrapped = nn.Module()
    wrapped.body = model
    wrapped.forward = lambda x: {"out": model(x)}
    groups = groups_of(wrapped, [model[3]], size=(8, 8))
    ctx = PruneContext(model=wrapped, groups=groups, device=torch.device("cpu"), num_classes=2,
                       batch_source=lambda: iter([(torch.randn(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long))]))
    with pytest.raises(ConfigError, match="bn_stats=running"):
        get_method("sirfp").score(ctx)
    assert all(not m._forward_hooks for m in model.modules())
