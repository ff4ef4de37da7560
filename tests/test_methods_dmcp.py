"""DMCP pinned on hand-built cases, then sirfp, fgp and dmcp run on every registered model through
`prune_model`."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from seg_cases import CLASSES, SIZE, groups_of, run_prune, synthetic_fit, tiny_model

from vss_cli.engine.complexity import count_complexity
from vss_cli.engine.macs import measure_conv_macs
from vss_cli.models import build_model, get_model_info, list_models
from vss_cli.pruning.base import PruneContext
from vss_cli.pruning.methods.dmcp import (
    ExpectedMacs,
    MarkovGate,
    flops_loss,
    in_inference_graph,
)
from vss_cli.pruning.planner import plan_channels
from vss_cli.pruning.registry import get_method
from vss_cli.pruning.surgery import LayerGroup, output_layers_of

torch.set_num_threads(1)



# ---------------------------------------------------------------------------------------------
# dmcp


def test_dmcp_marginals_are_non_increasing_and_start_at_one():
    conv = nn.Conv2d(1, 37, 1)
    gate = MarkovGate(LayerGroup(name="c", root=conv, size=37, convs=[("c", conv)]), torch.randperm(37))
    with torch.no_grad():
        gate.alpha.copy_(torch.randn(gate.steps - 1) * 3)
    m = gate.marginals()
    # states at 10%, 15%, ..., 100% of 37 channels (the reference's 5% steps from 10%), merged where they round alike
    widths = sorted({max(1, round((0.1 + 0.05 * k) * 37)) for k in range(19)})
    assert gate.steps == len(widths) and m[0].item() == 1.0 and bool((m[1:] <= m[:-1]).all())
    assert torch.cumsum(gate.step_sizes, 0).tolist() == [float(w) for w in widths]
    # the leading channels (in rank order) fill the first step: the narrowest width, 10% of the layer
    assert set(gate.rank[:4].tolist()) == set(torch.nonzero(gate.step_of == 0).flatten().tolist())
    assert gate.expected_width().item() == pytest.approx(float((m * gate.step_sizes).sum()))


def test_dmcp_flops_loss_is_zero_inside_the_band_and_log_distance_outside():
    t = 1000.0
    for inside in (950.0, 975.0, 1000.0):
        assert flops_loss(torch.tensor(inside, requires_grad=True), t).item() == 0.0
    above = torch.tensor(1100.0, requires_grad=True)
    loss = flops_loss(above, t)
    loss.backward()  # the official log_l1: above T the distance is taken to 0.95·T
    assert loss.item() == pytest.approx(torch.log(torch.tensor(150.0)).item()) and above.grad.item() > 0
    below = torch.tensor(900.0, requires_grad=True)
    flops_loss(below, t).backward()
    assert below.grad.item() < 0  # minimising pulls E up towards T


@pytest.mark.parametrize("name", ["unet", "deeplabv3_resnet50"])
def test_dmcp_expected_macs_model_matches_the_counter(name):
    """The differentiable MACs equal ptflops' count on the full and on a physically pruned model."""
    full = count_complexity(tiny_model(name), SIZE).macs  # an explicit target: the planner keeps dmcp's widths
    model, report = run_prune(name, "dmcp", target_macs=0.5 * full / 1e9)
    assert report.notes["dmcp_full_macs"] == pytest.approx(report.macs_before, rel=0.005)
    assert report.notes["dmcp_planned_macs"] == pytest.approx(report.macs_after, rel=0.005)


def test_dmcp_search_lands_within_five_percent_of_an_explicit_target():
    full = count_complexity(tiny_model("resnet50_seg"), SIZE).macs
    target = 0.45 * full
    model, report = run_prune("resnet50_seg", "dmcp", target_macs=target / 1e9)
    assert abs(report.macs_after - target) <= 0.05 * target
    assert report.notes["dmcp_arch_steps"] > 0 and report.notes["dmcp_iterations"] == 4
    assert tuple(model(torch.zeros(1, 3, *SIZE))["out"].shape) == (1, CLASSES, *SIZE)


def test_dmcp_restores_weights_keeps_leading_channels_and_removes_its_hooks():
    model = tiny_model("simple_segnet")
    ignored = output_layers_of(model, "simple_segnet")
    groups = groups_of(model, ignored)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = PruneContext(model=model, groups=groups, device=torch.device("cpu"), num_classes=CLASSES,
                       ratio=0.4, round_to=1, input_size=SIZE,
                       fit=lambda hooks, epochs, **kw: synthetic_fit()(model, hooks, epochs, **kw))
    method = get_method("dmcp")
    report = method.prepare(ctx)
    plan = plan_channels(method, ctx, method.score(ctx)).removed
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks for m in model.modules()) and not model.training
    assert plan and report.dmcp_warmup_iterations == 1  # 30% of 4 iterations
    for g in groups:
        if g.name in plan:
            gamma = torch.stack([bn.weight.detach().abs() for _, bn in g.bns]).mean(0)
            kept = [c for c in range(g.size) if c not in plan[g.name]]
            assert float(gamma[kept].min()) >= float(gamma[plan[g.name]].max())


def test_dmcp_scores_the_leading_gamma_order_when_no_search_ran():
    """`vss eval`'s oracle scores without prepare(): dmcp then ranks by the |γ| its search starts from."""
    model = tiny_model("simple_segnet")
    groups = groups_of(model, output_layers_of(model, "simple_segnet"))
    ctx = PruneContext(model=model, groups=groups, device=torch.device("cpu"), num_classes=CLASSES)
    scores = get_method("dmcp").score(ctx)
    assert set(scores) == {g.name for g in groups}
    for g in groups:
        if g.bns:
            gamma = torch.stack([bn.weight.detach().abs() for _, bn in g.bns]).mean(0)
            assert torch.equal(torch.argsort(scores[g.name], descending=True), torch.argsort(gamma, descending=True))


def test_dmcp_search_moves_widths_off_the_uniform_start():
    model = tiny_model("simple_segnet")
    groups = groups_of(model, output_layers_of(model, "simple_segnet"))
    ctx = PruneContext(model=model, groups=groups, device=torch.device("cpu"), num_classes=CLASSES,
                       ratio=0.4, round_to=1, input_size=SIZE,
                       fit=lambda hooks, epochs, **kw: synthetic_fit(iters=8)(model, hooks, epochs, **kw))
    method = get_method("dmcp")
    report = method.prepare(ctx)
    # every gated layer starts at the same keep probability; the α steps move at least one by > 2% of its width
    assert report.dmcp_arch_steps > 0 and report.dmcp_width_moved_max > 0.02
    assert report.extra_epochs == 1


def test_dmcp_macs_table_excludes_the_aux_head():
    model = build_model("fcn_resnet50", CLASSES, aux_loss=True, **get_model_info("fcn_resnet50").tiny_kwargs)
    table = measure_conv_macs(model, SIZE, torch.device("cpu"))
    assert sum(table.values()) == pytest.approx(count_complexity(model, SIZE).macs, rel=0.005)
    groups = groups_of(model, output_layers_of(model, "fcn_resnet50"))
    outside = [g.name for g in groups if not in_inference_graph(g, table)]
    assert outside and all(name.startswith("aux_classifier") for name in outside)
    assert ExpectedMacs(table, [g for g in groups if g.name not in outside]).full == pytest.approx(
        sum(table.values()))


# ---------------------------------------------------------------------------------------------
# every model


@pytest.mark.parametrize("method", ["sirfp", "fgp", "dmcp"])
@pytest.mark.parametrize("name", list_models())
def test_method_prunes_every_model(name, method):
    model, report = run_prune(name, method)
    assert tuple(model(torch.zeros(1, 3, *SIZE))["out"].shape) == (1, CLASSES, *SIZE)
    assert report.macs_after < report.macs_before and report.channels_after < report.channels_before
