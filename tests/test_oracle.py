"""Oracle channel importance and the rank statistics that compare criteria with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from vss_cli.pruning.base import PruneContext
from vss_cli.pruning.oracle import (
    agreement,
    average_ranks,
    bottom_overlap,
    choose_groups,
    kendall_tau_b,
    oracle_importance,
    spearman_rho,
)
from vss_cli.pruning.registry import get_method
from vss_cli.pruning.surgery import LayerGroup, build_graph, collect_groups

# ----------------------------------------------------------------------------------------------
# rank statistics


def test_average_ranks_share_ties():
    assert average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_hand_computed_values_with_ties():
    x, y = [1, 2, 2, 3], [1, 3, 2, 3]
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3.5, 2, 3.5]: Σ dx·dy = 3.75, Σ dx² = Σ dy² = 4.5
    assert spearman_rho(x, y) == pytest.approx(3.75 / 4.5, abs=1e-12)
    # 4 concordant, 0 discordant, one tie in x, one tie in y among 6 pairs: 4 / sqrt(5 · 5)
    assert kendall_tau_b(x, y) == pytest.approx(0.8, abs=1e-12)
    assert spearman_rho([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman_rho([1, 1, 1], [1, 2, 3])) and np.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize("seed", [0, 1])
def test_rank_statistics_match_scipy(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 12, size=700).astype(float)  # many ties; > one chunk of the tau computation
    y = x + rng.integers(0, 6, size=700)
    assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y, variant="b").statistic, abs=1e-12)


def test_bottom_overlap():
    truth = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert bottom_overlap(truth, truth) == 1.0
    assert bottom_overlap([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], truth) == 0.0
    assert bottom_overlap([0, 9, 2, 3, 4, 5, 6, 7, 8, 1], truth) == 0.5  # bottom-2: {0, 9} vs {0, 1}


# ----------------------------------------------------------------------------------------------
# the oracle on a one-layer network whose channel importances are known


class OneLayer(nn.Module):
    """conv -> BN -> ReLU -> 1×1 classifier; every live channel votes for class 0 with weight `vote`."""

    def __init__(self, channels: int = 6, vote: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.classifier = nn.Conv2d(channels, 2, 1)
        with torch.no_grad():
            self.classifier.weight.zero_()
            self.classifier.weight[0].fill_(vote)
            self.classifier.weight[1].fill_(-vote)
            self.classifier.bias.zero_()

    def forward(self, x):
        return {"out": self.classifier(self.relu(self.bn(self.conv(x))))}


def groups_of(model: nn.Module) -> list[LayerGroup]:
    ignored = [model.classifier]
    return collect_groups(model, build_graph(model, ignored, size=(8, 8)), ignored)


def constant_batches(value: float = 0.5, n: int = 2) -> list:
    images = torch.full((n, 3, 8, 8), value)
    return [(images, torch.zeros(n, 8, 8, dtype=torch.long))]


def test_planted_dead_channel_is_least_important_and_model_is_untouched():
    torch.manual_seed(0)
    model = OneLayer(channels=6, vote=0.3).eval()
    with torch.no_grad():
        model.conv.weight.copy_(torch.rand_like(model.conv.weight) + 0.1)
        model.bn.bias.fill_(0.1)
        model.bn.weight[2] = 0.0
        model.bn.bias[2] = 0.0  # channel 2 is dead: its BN output is 0 whatever the input
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = groups_of(model)
    assert [g.name for g in groups] == ["conv"]
    imp = oracle_importance(model, groups, constant_batches(), ignore_index=255).importance["conv"]
    assert imp[2] == 0.0
    assert int(torch.argmin(imp)) == 2
    assert (imp[[0, 1, 3, 4, 5]] > 0).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.bn._forward_hooks and not model.training


def test_l1_built_to_match_the_oracle_reaches_spearman_one():
    channels = 7
    model = OneLayer(channels=channels, vote=1.0).eval()
    with torch.no_grad():
        for c in range(channels):  # filter c: every weight (c + 1)·0.05 -> L1 and contribution both grow with c
            model.conv.weight[c].fill_((c + 1) * 0.05)
    groups = groups_of(model)
    oracle = oracle_importance(model, groups, constant_batches(), ignore_index=255)
    assert oracle.forward_passes == 4  # base, dependency trace, capture, one replay of all 7 channels
    ctx = PruneContext(model=model, groups=groups, device=torch.device("cpu"), num_classes=2)
    result = agreement("l1", get_method("l1").score(ctx), oracle.importance)
    assert result.spearman == pytest.approx(1.0)
    assert result.kendall == pytest.approx(1.0)
    assert result.overlap == 1.0
    assert [layer.group for layer in result.layers] == ["conv"]


def test_choose_groups_spreads_evenly_and_skips_groups_without_bn():
    def group(name: str, with_bn: bool) -> LayerGroup:
        bn = nn.BatchNorm2d(4)
        return LayerGroup(name=name, root=nn.Conv2d(1, 4, 1), size=4, bns=[(f"{name}.bn", bn)] if with_bn else [])

    groups = [group(f"g{i}", with_bn=i != 3) for i in range(10)]
    assert [g.name for g in choose_groups(groups, 4)] == ["g0", "g4", "g6", "g9"]
    assert len(choose_groups(groups, 50)) == 9
    assert [g.name for g in choose_groups(groups, 1)] == ["g0"]


# ----------------------------------------------------------------------------------------------
# the cached, batched oracle equals the plain one-channel-one-forward definition


def brute_force_importance(model: nn.Module, group: LayerGroup, batches: list) -> torch.Tensor:
    """The definition, spelled out: a full forward per channel with that channel zeroed in every BN."""
    bns = [bn for _, bn in group.bns if bn.num_features == group.size]

    def loss() -> float:
        total = sum(float(torch.nn.functional.cross_entropy(model(x)["out"], y, ignore_index=255, reduction="sum"))
                    for x, y in batches)
        return total / sum(int((y != 255).sum()) for _, y in batches)

    base, out = loss(), torch.empty(group.size, dtype=torch.float64)
    for c in range(group.size):
        mask = torch.ones(1, group.size, 1, 1)
        mask[0, c] = 0.0
        handles = [bn.register_forward_hook(lambda _m, _i, o, mask=mask: o * mask) for bn in bns]
        out[c] = loss() - base
        for h in handles:
            h.remove()
    return out


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "unet", "simple_segnet"])
def test_cached_batched_oracle_equals_the_definition(name, tiny_batches):
    from vss_cli.models import build_model, get_model_info
    from vss_cli.pruning.oracle_replay import frozen_modules, trace_calls
    from vss_cli.pruning.surgery import output_layers_of

    torch.manual_seed(0)
    model = build_model(name, 5, **get_model_info(name).tiny_kwargs).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    ignored = output_layers_of(model, name)
    groups = choose_groups(collect_groups(model, build_graph(model, ignored, size=(32, 32)), ignored), 3)
    batches = [(x[:2], y[:2]) for x, y in tiny_batches]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = oracle_importance(model, groups, batches, ignore_index=255, channels_per_pass=3)
    with torch.no_grad():
        for g in groups:
            assert torch.allclose(fast.importance[g.name], brute_force_importance(model, g, batches), atol=1e-5), g.name
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks and "forward" not in m.__dict__
               for m in model.modules())
    # the last group sits high in the network: most of the model below it was cached, not re-run
    trace = trace_calls(model, batches[0][0][:1], [bn for _, bn in groups[-1].bns])
    assert len(frozen_modules(model, trace)) >= 1


def test_run_oracle_scores_all_nine_methods_and_warns_about_missing_images():
    """What `vss eval --oracle-samples 8 --oracle-methods all` runs: every criterion, none failing."""
    from vss_cli.data import build_dataset, get_spec
    from vss_cli.models import build_model, get_model_info
    from vss_cli.pruning.oracle_run import OracleSetup, run_oracle
    from vss_cli.pruning.registry import list_methods
    from vss_cli.workflows.prune import sample_source

    torch.manual_seed(0)
    spec, size = get_spec("synthetic"), (32, 48)
    model = build_model("unet", spec.num_classes, **get_model_info("unet").tiny_kwargs).eval()
    for m in model.modules():  # distinct |γ|: slimming's and dmcp's scores are not all tied
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.2, 1.5)
    val = build_dataset("synthetic", "val", input_size=size, train=False)
    images = [val[i] for i in range(6)]  # fewer than the 8 asked for
    report = run_oracle(OracleSetup(
        model=model, model_name="unet", methods=list_methods(), images=images, samples=8, layers=2, batch_size=4,
        device=torch.device("cpu"), num_classes=spec.num_classes, ignore_index=spec.ignore_index, input_size=size,
        score_batches=sample_source("synthetic", None, size, 8, 4, 0)))
    assert len(list_methods()) >= 9 and sorted(report["methods"]) == list_methods()
    for name, m in report["methods"].items():
        assert m["error"] is None, (name, m["error"])
        assert np.isfinite(m["spearman"]) and len(m["layers"]) == 2, name
    assert report["samples"] == 6 and "--oracle-samples 8" in report["note"] and "(6)" in report["note"]
    assert 0 < report["oracle_seconds"] <= report["seconds"]
    assert "scored without its prepare()" in report["methods"]["dmcp"]["note"]
