"""Budgets (issue 12): what `--global-ratio` counts, the analytic MACs model, the common knob search.

The done-when check — `--budget macs --global-ratio R` lands within ±0.02 of R — runs unmarked on a
representative subset (every method on unet at 0.5, three methods × three allocations on the
residual/ASPP/aux DeepLabV3 at 0.3); the whole nine methods × three models × two ratios × three
allocations product is `heavy`.
"""

from __future__ import annotations

import pytest
import torch
from test_planner import REFERENCE, run
from test_prune import SIZE, build

from vss_cli.engine.complexity import count_complexity
from vss_cli.errors import ConfigError
from vss_cli.pruning.budget import (
    _BUDGETS,
    Budget,
    BudgetFit,
    MacsModel,
    bisect_knob,
    get_budget,
    list_budgets,
    register_budget,
)
from vss_cli.pruning.registry import list_methods
from vss_cli.pruning.surgery import (
    apply_plan,
    build_graph,
    collect_groups,
    inference_convs,
    output_layers_of,
    split_inference_groups,
)
from vss_cli.workflows.prune import PruneOptions

ALLOCATIONS = ("paper", "uniform", "global")


def count(m):
    return count_complexity(m, SIZE)


def model_kw(name: str) -> dict:
    return {"aux_loss": True} if name.startswith("deeplab") else {}


def assert_macs_budget(name: str, method: str, ratio: float, allocation: str) -> None:
    _, report = run(name, method, ratio=ratio, allocation=allocation, budget="macs", model_kw=model_kw(name),
                    count=count)
    assert abs(report.macs_reduction - ratio) <= 0.02, (name, method, allocation, report.macs_reduction)
    assert report.notes["planned_reduction"] == pytest.approx(report.macs_reduction, abs=1e-9)


@pytest.mark.parametrize("method", list_methods())
def test_macs_budget_every_method_on_unet(method):
    assert_macs_budget("unet", method, 0.5, "paper")


@pytest.mark.parametrize("allocation", ALLOCATIONS)
@pytest.mark.parametrize("method", ["l1", "taylor", "sirfp"])
def test_macs_budget_every_allocation_on_deeplab(method, allocation):
    assert_macs_budget("deeplabv3_resnet50", method, 0.3, allocation)


@pytest.mark.heavy
@pytest.mark.parametrize("allocation", ALLOCATIONS)
@pytest.mark.parametrize("ratio", [0.3, 0.5])
@pytest.mark.parametrize("method", list_methods())
@pytest.mark.parametrize("name", REFERENCE)
def test_macs_budget_everywhere(name, method, ratio, allocation):
    assert_macs_budget(name, method, ratio, allocation)


@pytest.mark.parametrize("name", REFERENCE)
def test_the_analytic_macs_model_equals_ptflops_on_pruned_models(name):
    """Random kept widths: the model's prediction equals ptflops on the physically pruned network."""
    model = build(name, **model_kw(name))
    ignored = output_layers_of(model, name)
    dg = build_graph(model, ignored)
    groups, _ = split_inference_groups(collect_groups(model, dg, ignored), inference_convs(model, SIZE))
    macs = MacsModel(model, groups, SIZE)
    assert macs.macs({}) == count(model).macs
    g = torch.Generator().manual_seed(0)
    widths = {grp.name: int(torch.randint(1, grp.size + 1, (1,), generator=g)) for grp in groups}
    predicted = macs.macs(widths)
    apply_plan(dg, groups, {grp.name: list(range(grp.size - widths[grp.name])) for grp in groups})
    assert predicted == pytest.approx(count(model).macs, rel=1e-9)
    assert macs.reduction(widths) > 0


def test_bisection_picks_the_plan_closest_to_the_ratio():
    sizes = {"a": 10, "b": 10}

    def keep_at(t):  # both layers step together: the bracketing plans differ in two layers
        k = 10 - int(t * 10) // 2 * 2
        return {"a": k, "b": k}

    def cost(w):
        return sum(sizes[n] - w[n] for n in w) / 20

    assert cost(keep_at(0.5)) == 0.4 and cost(keep_at(0.7)) == 0.6
    fit = bisect_knob(keep_at, cost, 0.48)
    assert isinstance(fit, BudgetFit) and fit.cost == pytest.approx(0.5)  # one layer moved alone: 10 of 20
    assert sorted(fit.widths.values()) == [4, 6]
    with pytest.raises(ConfigError, match="--global-ratio 0.99 is out of reach"):
        bisect_knob(lambda t: {"a": max(1, round(10 * (1 - t)))}, lambda w: (10 - w["a"]) / 10, 0.99)


def test_budgets_are_a_registry_a_new_one_plugs_into_the_common_search():
    assert {"channels", "macs"} <= set(list_budgets())
    with pytest.raises(ConfigError, match="--budget 'watts'"):
        get_budget("watts")

    @register_budget
    class Params(Budget):  # removed conv output channels weighted by their input width
        name = "test_params"

        def cost(self, ctx):
            full = sum(g.size * g.root.in_channels for g in ctx.groups)
            return lambda w: sum((g.size - w.get(g.name, g.size)) * g.root.in_channels for g in ctx.groups) / full

    try:
        _, report = run("unet", "l1", ratio=0.4, budget="test_params", round_to=1)
        assert report.notes["planned_reduction"] == pytest.approx(0.4, abs=0.02)
    finally:
        _BUDGETS.pop("test_params")


def test_channels_budget_counts_the_allocation_before_rounding():
    _, exact = run("unet", "l1", ratio=0.3, allocation="uniform", round_to=1)
    _, rounded = run("unet", "l1", ratio=0.3, allocation="uniform", round_to=8)
    assert abs(exact.channel_prune_ratio - 0.3) <= 0.02
    assert rounded.channel_prune_ratio <= exact.channel_prune_ratio  # rounding only keeps more
    assert rounded.notes["planned_reduction"] == pytest.approx(exact.notes["planned_reduction"])


def test_budget_allocation_and_normalizer_are_part_of_the_config_key(tmp_path):
    from vss_cli.engine.checkpoint import ModelSpec, save_checkpoint
    from vss_cli.models import get_model_info
    from vss_cli.store import Store
    from vss_cli.workflows.prune import prune_run

    ckpt = save_checkpoint(tmp_path / "m.pt", model=build("unet"),
                           spec=ModelSpec("unet", 5, get_model_info("unet").tiny_kwargs))
    store = Store(tmp_path / "vss.db")
    base = dict(ckpt=str(ckpt), method="l1", input_size=SIZE, samples=0, device="cpu")
    runs = [prune_run(PruneOptions(**base, **kw, save=str(tmp_path / str(i))), store)
            for i, kw in enumerate([{}, {"budget": "macs"}, {"allocation": "global"},
                                    {"allocation": "global", "normalizer": "max"}])]
    records = [store.get_run(r.run_id) for r in runs]
    assert len({r.config_key for r in records}) == 4
    assert (records[1].config["budget"], records[2].config["allocation"], records[3].config["normalizer"]) == \
        ("macs", "global", "max")
    metrics = {m.key: m.value for m in store.metrics(runs[1].run_id)}
    assert abs(metrics["macs_reduction"] - 0.3) <= 0.02 and 0 < metrics["channel_prune_ratio"] < 0.3
