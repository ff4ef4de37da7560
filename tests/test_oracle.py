"""Oracle channel importance and the rank statistics that compare criteria with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from vss_cli.pruning.base import PruneContext, get_method
from vss_cli.pruning.oracle import (
    agreement,
    average_ranks,
    bottom_overlap,
    choose_groups,
    kendall_tau_b,
    oracle_importance,
    spearman_rho,
)
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
    assert oracle.forward_passes == 1 + channels
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
