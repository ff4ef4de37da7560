"""Allocation rules, rounding that spares narrow layers, and the inference-graph-only groups (issue 12)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from test_prune import NUM_CLASSES, SIZE, build, synthetic_batches, tiny_fit

from vss_cli.engine.complexity import Complexity, count_complexity
from vss_cli.errors import ConfigError
from vss_cli.models import list_models
from vss_cli.pruning.planner import (
    ALLOCATIONS,
    AllocationRequest,
    global_rule,
    normalise,
    round_keep,
    rule_for,
    uniform_rule,
)
from vss_cli.pruning.registry import get_method, list_methods, method_class
from vss_cli.pruning.surgery import LayerGroup, layer_widths
from vss_cli.workflows.prune import PruneOptions, prune_model

FAST = {"slimming": {"sparse_epochs": 1}, "dmcp": {"max_iters": 2}}


def run(name: str, method: str, *, ratio: float = 0.3, model_kw=None, count=None, **opts):
    """Prune a tiny registered model in memory; returns (model, report)."""
    model = build(name, **(model_kw or {}))
    opts.setdefault("method_options", FAST.get(method, {}))
    options = PruneOptions(ckpt="", method=method, global_ratio=ratio, samples=4, **opts)
    report, _ = prune_model(model, name, get_method(method, **options.method_options), options, input_size=SIZE,
                            device="cpu", batch_source=synthetic_batches, fit=tiny_fit, num_classes=NUM_CLASSES,
                            ignore_index=255, count=count or (lambda m: Complexity(0, 0)))
    return model, report


def count_complexity_at(size):
    return lambda m: count_complexity(m, size)


def hand_group(name: str, size: int, region: str = "backbone") -> LayerGroup:
    return LayerGroup(name=name, root=nn.Identity(), size=size, region=region)


# ---------------------------------------------------------------------------------------------
# rounding


def test_rounding_spares_layers_narrower_than_four_multiples():
    assert round_keep(11, 16, 8) == 11  # 16 < 4·8: exact
    assert round_keep(5, 31, 8) == 5
    assert round_keep(33, 32, 8) == 32 and round_keep(17, 32, 8) == 24  # rounded up, never down
    assert round_keep(45, 64, 8) == 48 and round_keep(48, 64, 8) == 48
    assert round_keep(3, 64, 1) == 3 and round_keep(0, 8, 8, floor=2) == 2
    for size in range(1, 129):
        for keep in range(1, size + 1):
            assert keep <= round_keep(keep, size, 8) <= size  # never cuts further than asked


def test_a_16_channel_layer_under_uniform_0_3_with_round_to_8_keeps_at_least_11():
    model, _ = run("unet", "l1", allocation="uniform", round_to=8)
    before = layer_widths(build("unet"))
    sixteen = [n for n, w in before.items() if w == 16]
    assert sixteen
    kept = layer_widths(model)
    assert all(kept[n] >= 11 for n in sixteen), {n: kept[n] for n in sixteen}
    wide = [n for n, w in before.items() if w >= 32 and n in kept and kept[n] < w]
    assert wide and all(kept[n] % 8 == 0 for n in wide)  # layers at least 4·8 wide are still rounded


# ---------------------------------------------------------------------------------------------
# allocation rules


def test_every_method_declares_a_registered_paper_rule():
    expected = {"l1": "uniform", "l2": "uniform", "random": "uniform", "fpgm": "uniform", "taylor": "global_raw",
                "slimming": "global_raw", "sirfp": "regions", "fgp": "share", "dmcp": "searched"}
    assert {m: method_class(m).paper_allocation for m in expected} == expected
    assert {method_class(m).paper_allocation for m in list_methods()} <= set(ALLOCATIONS)
    assert rule_for("uniform", get_method("taylor")) == "uniform" and rule_for("paper", get_method("taylor")) == "global_raw"
    with pytest.raises(ConfigError, match="--allocation 'nope'"):
        rule_for("nope", get_method("l1"))


def test_uniform_takes_the_same_fraction_of_every_layer_whatever_the_scores():
    groups = [hand_group("a", 10), hand_group("b", 20), hand_group("c", 40)]
    low_first = {"a": torch.zeros(10), "b": torch.ones(20), "c": torch.full((40,), 9.0)}
    keep = uniform_rule(AllocationRequest(groups, low_first)).keep
    assert keep(0.0) == {"a": 10, "b": 20, "c": 40}
    assert keep(0.3) == {"a": 7, "b": 14, "c": 28}
    assert keep(1.0) == {"a": 1, "b": 2, "c": 4}  # the per-layer cap keeps 10%


def test_global_threshold_follows_the_normalised_order():
    groups = [hand_group("a", 4), hand_group("b", 4)]
    scores = {"a": torch.tensor([1.0, 2.0, 3.0, 10.0]), "b": torch.tensor([100.0, 200.0, 300.0, 400.0])}
    raw = global_rule(AllocationRequest(groups, scores, "none")).keep
    assert raw(3 / 8) == {"a": 1, "b": 4}  # raw: only the small-valued layer loses channels
    mean = global_rule(AllocationRequest(groups, scores, "mean")).keep
    # mean-normalised: a = [.25, .5, .75, 2.5], b = [.4, .8, 1.2, 1.6]: the three lowest are a0, b0, a1
    assert mean(3 / 8) == {"a": 2, "b": 3}
    assert normalise(scores["b"], "max").tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ConfigError, match="--normalizer 'median'"):
        normalise(scores["a"], "median")


def test_sirfp_regions_are_thresholded_separately_on_raw_scores():
    groups = [hand_group("enc", 10), hand_group("dec", 10, region="head")]
    scores = {"enc": torch.linspace(0, 1, 10), "dec": torch.linspace(5, 6, 10)}
    keep = ALLOCATIONS["regions"](AllocationRequest(groups, scores, method=get_method("sirfp"))).keep
    assert keep(0.5) == {"enc": 5, "dec": 5}  # one raw threshold over both would take only from enc
    assert global_rule(AllocationRequest(groups, scores, "none")).keep(0.5) == {"enc": 1, "dec": 9}


def test_fgp_share_rule_fixes_widths_with_a_given_share_and_meets_the_budget_without():
    _, report = run("unet", "fgp", method_options={"share": 0.8}, budget="macs")
    assert report.notes["allocation_rule"] == "share" and report.notes["budget_applied"] is False
    _, report = run("unet", "fgp", budget="macs", ratio=0.5, round_to=1, count=count_complexity_at(SIZE))
    assert report.notes["allocation_rule"] == "share" and report.notes["budget_applied"] is True
    assert report.macs_reduction == pytest.approx(0.5, abs=0.03)
    assert 0 < report.notes["allocation_knob"] < 1  # T = 1 − knob, the share the search found


REFERENCE = ("unet", "simple_segnet", "deeplabv3_resnet50")


@pytest.mark.parametrize("name, budget", [(n, "channels") for n in list_models()] + [(n, "macs") for n in REFERENCE])
def test_uniform_l1_and_random_keep_identical_widths(name, budget):
    widths = [layer_widths(run(name, m, allocation="uniform", budget=budget)[0]) for m in ("l1", "random")]
    assert widths[0] == widths[1]
    assert widths[0] != layer_widths(build(name))


@pytest.mark.heavy
@pytest.mark.parametrize("name", list_models())
def test_uniform_l1_and_random_keep_identical_widths_under_macs_on_every_model(name):
    widths = [layer_widths(run(name, m, allocation="uniform", budget="macs")[0]) for m in ("l1", "random")]
    assert widths[0] == widths[1]


def test_global_allocation_differs_from_uniform_for_l1():
    uniform = layer_widths(run("unet", "l1", allocation="uniform", round_to=1)[0])
    global_ = layer_widths(run("unet", "l1", allocation="global", round_to=1)[0])
    assert uniform != global_


# ---------------------------------------------------------------------------------------------
# only the inference graph counts


@pytest.mark.parametrize("method", ["taylor", "fgp", "l1"])
def test_aux_only_groups_are_never_removed_nor_counted(method):
    full = build("deeplabv3_resnet50", aux_loss=True)
    aux_before = {n: w for n, w in layer_widths(full).items() if n.startswith("aux_classifier")}
    model, report = run("deeplabv3_resnet50", method, ratio=0.3, model_kw={"aux_loss": True}, round_to=1)
    aux_after = {n: w for n, w in layer_widths(model).items() if n.startswith("aux_classifier")}
    assert aux_after == aux_before
    assert report.notes["aux_only_groups"] and all(n.startswith("aux_classifier") for n in report.notes["aux_only_groups"])
    assert abs(report.channel_prune_ratio - 0.3) <= 0.02  # the inference network loses what was asked
    without_aux = run("deeplabv3_resnet50", "l1", ratio=0.3, round_to=1)[1]
    assert report.channels_before == without_aux.channels_before  # aux channels are not in the count


def test_report_carries_channel_ratio_and_macs_reduction():
    _, report = run("unet", "l1", ratio=0.4, budget="macs", count=lambda m: count_complexity(m, SIZE))
    scalars = report.scalars()
    assert {"channel_prune_ratio", "macs_reduction"} <= set(scalars)
    assert scalars["macs_reduction"] == pytest.approx(1 - report.macs_after / report.macs_before)
    assert abs(scalars["macs_reduction"] - 0.4) <= 0.02
