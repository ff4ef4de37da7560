"""The six classic criteria (l1, l2, random, fpgm, taylor, slimming) and the default planner, pinned on
hand-made layers whose right answer can be worked out by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vss_cli.pruning.base import PruneContext
from vss_cli.pruning.planner import global_threshold_plan, normalise, plan_channels
from vss_cli.pruning.registry import get_method
from vss_cli.pruning.surgery import LayerGroup, build_graph, collect_groups

NUM_CLASSES = 3


class TinyNet(nn.Module):
    """conv-bn-relu-conv-bn-relu-conv (or the same without BN), returning {"out": logits}."""

    def __init__(self, bn: bool = True, widths: tuple[int, int] = (8, 6)) -> None:
        super().__init__()
        a, b = widths
        norm = nn.BatchNorm2d if bn else (lambda _: nn.Identity())
        self.body = nn.Sequential(
            nn.Conv2d(3, a, 3, padding=1, bias=not bn), norm(a), nn.ReLU(),
            nn.Conv2d(a, b, 3, padding=1, bias=not bn), norm(b), nn.ReLU(),
            nn.Conv2d(b, NUM_CLASSES, 1),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)}


def tiny(bn: bool = True, seed: int = 0, widths: tuple[int, int] = (8, 6)) -> TinyNet:
    torch.manual_seed(seed)
    model = TinyNet(bn, widths).eval()
    if bn:  # non-trivial BN statistics and affine parameters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.5, 0.5)
    return model


def groups_of(model: TinyNet) -> list[LayerGroup]:
    ignored = [model.body[-1]]
    return collect_groups(model, build_graph(model, ignored, size=(8, 8)), ignored)


def batch_source(n_batches: int = 3, size: int = 8, seed: int = 0):
    def batches():
        g = torch.Generator().manual_seed(seed)
        for _ in range(n_batches):
            labels = torch.randint(0, NUM_CLASSES, (2, size, size), generator=g)
            labels[:, 0, :] = 255  # some void pixels
            yield torch.randn(2, 3, size, size, generator=g), labels
    return batches


def context(model: nn.Module, **kw) -> PruneContext:
    if "groups" not in kw:
        kw["groups"] = groups_of(model)
    return PruneContext(model=model, device=torch.device("cpu"), num_classes=NUM_CLASSES, **kw)


def score(method: str, model: nn.Module, **kw) -> dict[str, torch.Tensor]:
    return get_method(method).score(context(model, **kw))


# ---------------------------------------------------------------------------------------------
# the groups the tests rely on


def test_tiny_groups_are_the_two_hidden_convs():
    groups = groups_of(tiny())
    assert sorted((g.name, g.size, [n for n, _ in g.convs], [n for n, _ in g.bns]) for g in groups) == [
        ("body.0", 8, ["body.0"], ["body.1"]),
        ("body.3", 6, ["body.3"], ["body.4"]),
    ]


# ---------------------------------------------------------------------------------------------
# l1 / l2


def test_l1_and_l2_match_a_hand_computation():
    model = tiny()
    w = torch.arange(8 * 3 * 3 * 3, dtype=torch.float32).reshape(8, 3, 3, 3) % 7 - 3
    model.body[0].weight.data.copy_(w)
    l1, l2 = score("l1", model), score("l2", model)
    for c in range(8):
        values = [float(v) for v in w[c].flatten()]
        assert l1["body.0"][c].item() == pytest.approx(sum(abs(v) for v in values))
        assert l2["body.0"][c].item() == pytest.approx(sum(v * v for v in values) ** 0.5)


def test_magnitude_scores_of_a_residual_group_are_the_mean_over_its_convs():
    a, b = nn.Conv2d(2, 4, 1, bias=False), nn.Conv2d(2, 4, 1, bias=False)
    a.weight.data.fill_(1.0)
    b.weight.data.fill_(3.0)
    group = LayerGroup(name="a", root=a, size=4, convs=[("a", a), ("b", b)])
    model = nn.Sequential(a, b)
    assert torch.equal(score("l1", model, groups=[group])["a"], torch.full((4,), 4.0))


# ---------------------------------------------------------------------------------------------
# random


def test_random_is_deterministic_per_seed_and_differs_across_seeds():
    model = tiny()
    first, again, other = (score("random", model, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    assert all(((v >= 0) & (v < 1)).all() and v.numel() == g.size
               for g, v in zip(groups_of(model), first.values(), strict=True))


# ---------------------------------------------------------------------------------------------
# fpgm


def test_fpgm_prunes_the_filter_at_the_geometric_median_first():
    model = tiny()
    conv = model.body[0]
    centre = torch.full((27,), 2.0)
    filters = [centre.clone()]
    for i in range(7):  # equidistant points on orthogonal offsets: the centre is their geometric median
        f = centre.clone()
        f[i] -= 1.0
        f[i + 10] -= 1.5
        filters.append(f)
    order = [3, 0, 5, 1, 2, 4, 6, 7]  # the median sits at channel 1
    conv.weight.data.copy_(torch.stack([filters[i] for i in order]).reshape(8, 3, 3, 3))
    scores = score("fpgm", model)["body.0"]
    assert int(scores.argmin()) == 1
    # it has the largest magnitude, so l1 would keep it
    assert int(score("l1", model)["body.0"].argmax()) == 1
    expected = torch.cdist(conv.weight.flatten(1), conv.weight.flatten(1)).sum(1)
    assert torch.allclose(scores, expected, atol=1e-4)


def test_fpgm_identical_filters_score_zero():
    model = tiny()
    model.body[3].weight.data[:] = 0.5
    assert torch.allclose(score("fpgm", model)["body.3"], torch.zeros(6), atol=1e-4)


# ---------------------------------------------------------------------------------------------
# taylor


def test_taylor_matches_the_bn_formula_and_zero_gamma_beta_scores_zero():
    model = tiny()
    bn = model.body[1]
    bn.weight.data[2] = 0.0
    bn.bias.data[2] = 0.0
    scores = score("taylor", model, batch_source=batch_source())
    assert scores["body.0"][2].item() == 0.0
    assert (scores["body.0"][[0, 1, 3]] > 0).all()

    expected = torch.zeros(8)
    for images, labels in batch_source()():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images)["out"], labels, ignore_index=255).backward()
        expected += (bn.weight * bn.weight.grad + bn.bias * bn.bias.grad).detach().pow(2)
    model.zero_grad(set_to_none=True)
    assert torch.allclose(scores["body.0"], expected / 3, rtol=1e-4, atol=1e-12)


def test_taylor_leaves_statistics_mode_and_gradients_untouched():
    model = tiny().train()
    ctx = context(model, batch_source=batch_source())
    model.body[4].eval()  # a frozen BN inside a training model keeps its own mode
    modes = [m.training for m in model.modules()]
    model.body[0].weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    get_method("taylor").score(ctx)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # running_mean/var included
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert not model.body[0].weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "body.0.weight")


def test_taylor_without_bn_uses_the_activation_form():
    """(Σ z·∂L/∂z)² on the conv output, the paper's feature × gradient term, equals the filter-parameter sum."""
    model = tiny(bn=False)
    scores = score("taylor", model, batch_source=batch_source(n_batches=2))
    expected, kept = torch.zeros(8), {}

    def keep_output(module, inputs, output):
        output.retain_grad()
        kept["z"] = output

    model.body[0].register_forward_hook(keep_output)
    for images, labels in batch_source(n_batches=2)():
        F.cross_entropy(model(images)["out"], labels, ignore_index=255).backward()
        expected += (kept["z"] * kept["z"].grad).sum((0, 2, 3)).detach().pow(2)
    model.zero_grad(set_to_none=True)
    assert torch.allclose(scores["body.0"], expected / 2, rtol=1e-3, atol=1e-10)


def test_taylor_needs_data():
    from vss_cli.errors import ConfigError

    assert get_method("taylor").needs_data
    with pytest.raises(ConfigError):
        score("taylor", tiny())


# ---------------------------------------------------------------------------------------------
# slimming


def test_slimming_ranks_raw_abs_gamma_across_layers():
    model = tiny()
    model.body[1].weight.data.copy_(torch.tensor([0.9, -0.05, 0.3, 0.02, -0.6, 0.1, 0.4, 0.07]))
    model.body[4].weight.data.copy_(torch.tensor([3.0, 0.08, -2.0, 5.0, 1.0, 0.5]))
    method = get_method("slimming", sparse_epochs=0)
    ctx = context(model, ratio=5 / 14, round_to=1)
    prepared = method.prepare(ctx).notes()
    scores = method.score(ctx)
    assert torch.equal(scores["body.0"], model.body[1].weight.detach().abs())
    assert torch.equal(scores["body.3"], model.body[4].weight.detach().abs())
    assert not method.normalize and prepared["sparse_phase"] is False

    plan = plan_channels(method, ctx, scores).removed
    # the five smallest |γ| of both layers together: 0.02, 0.05, 0.07, 0.08, 0.1
    assert plan == {"body.0": [1, 3, 5, 7], "body.3": [1]}
    # per-layer normalisation would have ranked differently
    normalised = global_threshold_plan(ctx.groups, scores, 5 / 14, round_to=1, normalize=True)
    assert normalised != plan


def test_slimming_runs_a_sparse_phase_when_the_parent_had_no_lambda():
    calls = []

    def fake_fit(hooks, epochs, **kw):
        calls.append(epochs)
        model.body[1].weight.grad = torch.zeros(8)
        hooks.regularize(model)  # the L1 subgradient λ·sign(γ)
        assert torch.allclose(model.body[1].weight.grad, 1e-3 * torch.sign(model.body[1].weight.detach()))

    model = tiny()
    method = get_method("slimming", sparse_epochs=3, slimming_lambda=1e-3)
    ctx = context(model, fit=fake_fit)
    notes = method.prepare(ctx).notes()
    assert calls == [3]
    assert {k: notes[k] for k in ("sparse_phase", "sparse_epochs", "slimming_lambda", "extra_epochs")} == {
        "sparse_phase": True, "sparse_epochs": 3, "slimming_lambda": 1e-3, "extra_epochs": 3}
    assert notes["gamma_below_1e-2_before"] == notes["gamma_below_1e-2_after"] == 0.0
    assert "raise slimming_lambda" in notes["warning"]  # nothing moved: under 5% below 1e-2

    calls.clear()
    trained = context(model, fit=fake_fit, parent_config={"slimming_lambda": 1e-5})
    notes = method.prepare(trained).notes()
    assert calls == [] and notes["sparse_phase"] is False and notes["extra_epochs"] == 0


def test_bn_l1_subgradient_adds_lambda_sign_gamma_to_every_bn_gradient():
    from vss_cli.pruning.methods.slimming import bn_l1_subgradient

    model = tiny()
    model.body[1].weight.data[0] = -0.5
    for bn in (model.body[1], model.body[4]):
        bn.weight.grad = torch.full_like(bn.weight, 0.25)
    bn_l1_subgradient(model, 0.1)
    for bn in (model.body[1], model.body[4]):
        assert torch.allclose(bn.weight.grad, 0.25 + 0.1 * torch.sign(bn.weight.detach()))
    assert model.body[1].weight.grad[0].item() == pytest.approx(0.15)
    assert model.body[0].weight.grad is None  # convs untouched


def test_slimming_sparse_phase_shrinks_gamma_measurably():
    """A real sparse phase through engine.fit: the small |γ| go below 1e-2, the share is recorded."""
    from vss_cli.engine.train import TrainConfig
    from vss_cli.engine.train import fit as engine_fit

    model = tiny()
    with torch.no_grad():
        model.body[1].weight[:4] = 0.03  # half of the first layer starts near zero
    loader = list(batch_source(n_batches=10)())
    mean_before = float(model.body[1].weight.abs().mean())

    def fit(hooks, epochs, **kw):
        return engine_fit(model, loader, None, TrainConfig(epochs=epochs, lr=0.01), num_classes=NUM_CLASSES,
                          hooks=hooks, show_progress=False)

    ctx = context(model, fit=fit)
    notes = get_method("slimming", slimming_lambda=0.05, sparse_epochs=2).prepare(ctx).notes()
    assert notes["gamma_below_1e-2_before"] == 0.0
    assert notes["gamma_below_1e-2_after"] >= 4 / 14  # at least the four small ones of 8 + 6 channels
    assert float(model.body[1].weight.abs().mean()) < mean_before - 0.02
    assert "warning" not in notes and notes["extra_epochs"] == 2


# ---------------------------------------------------------------------------------------------
# the default planner


def hand_group(name: str, size: int) -> LayerGroup:
    return LayerGroup(name=name, root=nn.Identity(), size=size)


def test_planner_removes_the_lowest_normalised_scores():
    groups = [hand_group("a", 8), hand_group("b", 16)]
    scores = {"a": torch.arange(1.0, 9.0).flip(0), "b": 10 * torch.arange(1.0, 17.0)}
    plan = global_threshold_plan(groups, scores, 0.25, round_to=1)
    flat = sorted((float(normalise(scores[g.name])[c]), g.name, c) for g in groups for c in range(g.size))
    expected: dict[str, list[int]] = {}
    for _, name, c in flat[:6]:  # 25% of 24 channels
        expected.setdefault(name, []).append(c)
    assert plan == {k: sorted(v) for k, v in expected.items()}


def test_planner_respects_the_per_layer_cap():
    groups = [hand_group("a", 10), hand_group("b", 10)]
    scores = {"a": torch.tensor([0.1] * 9 + [9.1]), "b": torch.full((10,), 2.0)}
    plan = global_threshold_plan(groups, scores, 0.95, round_to=1)
    assert plan == {"a": list(range(9)), "b": list(range(9))}  # one channel per layer survives


def test_planner_rounds_kept_widths_to_multiples_of_eight():
    groups = [hand_group("a", 64), hand_group("b", 32), hand_group("c", 48), hand_group("d", 8)]
    g = torch.Generator().manual_seed(0)
    scores = {grp.name: torch.rand(grp.size, generator=g) for grp in groups}
    for ratio in (0.2, 0.3, 0.5):
        plan = global_threshold_plan(groups, scores, ratio, round_to=8)
        assert plan
        for grp in groups:
            kept = grp.size - len(plan.get(grp.name, []))
            if grp.size > 8:  # a layer no wider than round_to is exempt from rounding
                assert kept % 8 == 0 and kept >= 8
