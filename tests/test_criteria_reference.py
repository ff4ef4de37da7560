"""Each of the nine criteria against an independent reference computed here from its paper / official
formula (plain torch on the model's own modules, never through vss's scoring helpers), per layer on a
seeded tiny U-Net (declared backbone and head): Spearman ρ ≥ 0.99 and the same kept channels under
a uniform cut; random: same seed same scores, another seed different. Then sirfp's and fgp's paper
allocation rules against their official definitions on the same model."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from seg_cases import CLASSES, groups_of, synthetic_batches, tiny_model

from vss_cli.pruning.base import PruneContext
from vss_cli.pruning.planner import ALLOCATIONS, AllocationRequest, plan_channels
from vss_cli.pruning.registry import get_method
from vss_cli.pruning.surgery import output_layers_of

torch.set_num_threads(1)
RATIO = 0.3
SAMPLES = 8


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = torch.argsort(torch.argsort(a.double())).double()
    rb = torch.argsort(torch.argsort(b.double())).double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / math.sqrt(float((ra * ra).sum() * (rb * rb).sum())))


def top_channels(scores: torch.Tensor, keep: int) -> set[int]:
    """The `keep` highest-scored channels."""
    return set(torch.argsort(scores.double(), descending=True)[:keep].tolist())


@pytest.fixture(scope="module")
def setting():
    model = tiny_model("unet")
    groups = groups_of(model, output_layers_of(model, "unet"))
    return model, groups, synthetic_batches(SAMPLES)


def vss_scores(setting, method: str, **options) -> tuple[dict[str, torch.Tensor], PruneContext]:
    model, groups, batches = setting
    ctx = PruneContext(model=model, groups=groups, device=torch.device("cpu"), num_classes=CLASSES,
                       samples=SAMPLES, batch_source=batches, ratio=RATIO, round_to=1, allocation="uniform")
    m = get_method(method, **options)
    if method != "dmcp":  # dmcp's prepare() is its width search; its scores are the order it starts from
        m.prepare(ctx)
    return m.score(ctx), ctx


def mean_of(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.double() for t in tensors]).mean(0)


# ---------------------------------------------------------------------------------------------
# references, from the papers' formulas


def ref_l1(model, groups, batches):
    return {g.name: mean_of([c.weight.detach().abs().sum((1, 2, 3)) for _, c in g.convs]) for g in groups}


def ref_l2(model, groups, batches):
    return {g.name: mean_of([c.weight.detach().pow(2).sum((1, 2, 3)).sqrt() for _, c in g.convs]) for g in groups}


def ref_fpgm(model, groups, batches):
    """He et al.: Σ_j ‖F_i − F_j‖₂ over the layer's filters."""
    def sums(w):
        f = w.detach().double().flatten(1)
        return torch.stack([sum(((f[i] - f[j]) ** 2).sum().sqrt() for j in range(f.shape[0]))
                            for i in range(f.shape[0])])
    return {g.name: mean_of([sums(c.weight) for _, c in g.convs]) for g in groups}


def ref_slimming(model, groups, batches):
    return {g.name: mean_of([bn.weight.detach().abs() for _, bn in g.bns]) for g in groups}


def ref_dmcp(model, groups, batches):
    """DMCP keeps leading channels, ordered by |γ| before the search (METHODS.md)."""
    return ref_slimming(model, groups, batches)


def ref_taylor(model, groups, batches):
    """Molchanov et al. 2019: (γ·∂L/∂γ + β·∂L/∂β)² per minibatch, averaged over minibatches."""
    net = copy.deepcopy(model).eval()
    names = {g.name: [n for n, _ in g.bns] for g in groups}
    modules = dict(net.named_modules())
    total, n = {}, 0
    for images, labels in batches():
        net.zero_grad()
        F.cross_entropy(net(images)["out"], labels, ignore_index=255).backward()
        for g, bns in names.items():
            per = [(modules[b].weight * modules[b].weight.grad + modules[b].bias * modules[b].bias.grad).detach() ** 2
                   for b in bns]
            total[g] = total.get(g, 0) + mean_of(per)
        n += 1
    return {g: v / n for g, v in total.items()}


def ref_fgp(model, groups, batches):
    """Grad-CAM heat ReLU(mean_space(∂y_d/∂A)·A) of each conv output, per class present (target: the
    class's logit over its labelled pixels), each class normalised over the channels, then averaged."""
    net = copy.deepcopy(model).eval()
    modules = dict(net.named_modules())
    score = {g.name: torch.zeros(g.size, CLASSES, dtype=torch.float64) for g in groups}
    seen = set()
    for images, labels in batches():
        feats = {}
        handles = [modules[c].register_forward_hook(lambda m, i, o, key=(g.name, c), d=feats: d.__setitem__(key, o))
                   for g in groups for c, _ in g.convs]
        logits = net(images.requires_grad_(True))["out"]
        for h in handles:
            h.remove()
        keys = list(feats)
        for d in sorted(int(x) for x in torch.unique(labels) if int(x) < CLASSES):
            grads = torch.autograd.grad((logits[:, d] * (labels == d)).sum(), [feats[k] for k in keys],
                                        retain_graph=True, allow_unused=True)
            for (g, _), grad in zip(keys, grads, strict=True):
                a = feats[(g, _)].detach()
                w = torch.zeros_like(a) if grad is None else grad.mean((2, 3), keepdim=True)
                score[g][:, d] += F.relu(w * a).mean((2, 3)).sum(0).double()
            seen.add(d)
    cols = sorted(seen)
    out = {}
    for g, s in score.items():
        s = s[:, cols]
        tot = s.sum(0, keepdim=True)
        out[g] = torch.where(tot > 0, s / tot.clamp_min(1e-300), torch.zeros_like(s)).mean(1)
    return out


OFFICIAL_KERNEL = torch.tensor([[-0.5, 0.0, 0.5], [-1.0, 0.0, 1.0], [-0.5, 0.0, 0.5]], dtype=torch.float64)


def official_statistics(model, groups, batches, r: float = 0.99):
    """dywu98/SIRFP `get_graph_edge_hook` + `graph_edge_pruning.step`: per BN output of a train-mode
    forward, the batch mean of the per-image L1-normalised inner products and of the Sobel-magnitude
    std, kept as an EMA from 0 with r = 0.99."""
    net = copy.deepcopy(model).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()  # batch statistics, as during the official training-time hook (a copy: stats may move)
    modules = dict(net.named_modules())
    bn_names = [n for g in groups for n, _ in g.bns]
    eic, edge = {n: 0.0 for n in bn_names}, {n: 0.0 for n in bn_names}
    for images, _ in batches():
        outs = {}
        handles = [modules[n].register_forward_hook(
            lambda m, i, o, n=n, d=outs: d.__setitem__(n, o.detach().double())) for n in bn_names]
        with torch.no_grad():
            net(images)
        for h in handles:
            h.remove()
        for n, o in outs.items():
            flat = o.reshape(o.shape[0], o.shape[1], -1)
            normed = flat / (flat.abs().sum(-1, keepdim=True) + 1e-5)
            ci = torch.stack([normed[i] @ normed[i].T for i in range(o.shape[0])]).mean(0)
            c = o.shape[1]
            gx = F.conv2d(o, OFFICIAL_KERNEL.view(1, 1, 3, 3).repeat(c, 1, 1, 1), padding=1, groups=c)
            gy = F.conv2d(o, OFFICIAL_KERNEL.T.reshape(1, 1, 3, 3).repeat(c, 1, 1, 1), padding=1, groups=c)
            v = torch.sqrt(gx**2 + gy**2)
            hw = v.shape[2] * v.shape[3]
            e = (torch.sum(v**2, dim=(2, 3)) / hw - (torch.sum(v, dim=(2, 3)) / hw) ** 2).clamp_min(0) ** 0.5
            eic[n] = eic[n] * r + ci * (1 - r)
            edge[n] = edge[n] * r + e.mean(0) * (1 - r)
    return eic, edge


def official_para_score(simi: torch.Tensor, edge: torch.Tensor, backbone: bool) -> torch.Tensor:
    """`GraphEdgePruner.get_para_score`, step for step."""
    simi = simi.clone()
    score = 0.4 * edge.clone() if backbone else 0.0 * edge.clone()
    left = set(range(simi.shape[0]))
    for _ in range(simi.shape[0]):
        current = torch.sum(simi.abs(), dim=1)
        value, index = torch.sort(current, descending=True, stable=True)
        p = 0
        while int(index[p]) not in left:
            p += 1
        j = int(index[p])
        score[j] -= value[p]
        simi[j] *= 0.0
        simi[:, j] *= 0.0
        left -= {j}
    return score


def ref_sirfp(model, groups, batches):
    eic, edge = official_statistics(model, groups, batches)
    return {g.name: mean_of([official_para_score(eic[n], edge[n], g.region == "backbone") for n, _ in g.bns])
            for g in groups}


REFERENCES = {"l1": ref_l1, "l2": ref_l2, "fpgm": ref_fpgm, "taylor": ref_taylor, "slimming": ref_slimming,
              "fgp": ref_fgp, "sirfp": ref_sirfp, "dmcp": ref_dmcp}
OPTIONS = {"slimming": {"sparse_epochs": 0}}  # the parent as it is: the criterion, not the sparse phase


@pytest.mark.parametrize("method", sorted(REFERENCES))
def test_criterion_matches_its_independent_reference_per_layer(setting, method):
    model, groups, batches = setting
    scores, ctx = vss_scores(setting, method, **OPTIONS.get(method, {}))
    reference = REFERENCES[method](model, groups, batches)
    result = plan_channels(get_method(method, **OPTIONS.get(method, {})), ctx, scores)
    plan = result.removed
    assert set(scores) == set(reference) == {g.name for g in groups}
    for g in groups:
        rho = spearman(scores[g.name], reference[g.name])
        assert rho >= 0.99, (g.name, rho)
        kept = set(range(g.size)) - set(plan.get(g.name, []))
        assert result.rule == "uniform" and 0 < len(kept) < g.size
        assert kept == top_channels(reference[g.name], len(kept)), g.name


def test_random_same_seed_same_scores_other_seed_different(setting):
    model, groups, _ = setting

    def scores(seed):
        ctx = PruneContext(model=model, groups=groups, device=torch.device("cpu"), num_classes=CLASSES, seed=seed)
        return get_method("random").score(ctx)

    a, b, c = scores(0), scores(0), scores(1)
    assert all(torch.equal(a[g.name], b[g.name]) for g in groups)
    assert all(not torch.equal(a[g.name], c[g.name]) for g in groups)


# ---------------------------------------------------------------------------------------------
# paper allocation rules on a model with a declared backbone and head


def official_region_masks(scores: dict[str, torch.Tensor], groups, percent: float, layer_keep: float = 0.01):
    """`GraphEdgePruner.get_thresh` + `gen_channel_mask`: per region (backbone / the rest) the raw
    score at int(size·percent) of the sorted region is the threshold; a channel stays when its score
    is above it, and every layer keeps at least max(1, int(C·layer_keep)) of its best."""
    kept = {}
    for is_backbone in (True, False):
        members = [g for g in groups if (g.region == "backbone") == is_backbone]
        if not members:
            continue
        values = torch.cat([scores[g.name].double() for g in members])
        thresh = torch.sort(values).values[int(values.numel() * percent)]
        for g in members:
            s = scores[g.name].double()
            mask = s.gt(thresh)
            least = max(1, int(g.size * layer_keep))
            if int(mask.sum()) < least:
                mask[torch.argsort(s, descending=True)[:least]] = True
            kept[g.name] = set(torch.nonzero(mask).flatten().tolist())
    return kept


def test_sirfp_regions_rule_is_the_official_per_region_threshold(setting):
    model, groups, batches = setting
    assert {g.region for g in groups} == {"backbone", "head"}
    scores, _ = vss_scores(setting, "sirfp")
    sizes = [sum(g.size for g in groups if (g.region == "backbone") == b) for b in (True, False)]
    percent = 0.3
    while any(float(percent * n).is_integer() for n in sizes):  # so int(n·p) + 1 = ceil(n·p) in both regions
        percent += 1e-3
    # the official mask removes int(n·p) + 1 channels per region; the rule's knob t removes ceil(t·n)
    keep = ALLOCATIONS["regions"](AllocationRequest(groups, scores, method=get_method("sirfp"))).keep(percent)
    official = official_region_masks(ref_sirfp(model, groups, batches), groups, percent)
    assert {g.name: keep[g.name] for g in groups} == {n: len(k) for n, k in official.items()}
    ctx_scores = {n: s for n, s in scores.items()}
    for g in groups:
        kept = set(torch.argsort(ctx_scores[g.name].double(), descending=True)[:keep[g.name]].tolist())
        assert kept == official[g.name], g.name


def test_sirfp_cuts_the_head_by_the_same_share_as_the_backbone(setting):
    _, groups, _ = setting
    scores, _ = vss_scores(setting, "sirfp")
    keep = ALLOCATIONS["regions"](AllocationRequest(groups, scores, method=get_method("sirfp"))).keep(0.5)
    for is_backbone in (True, False):
        members = [g for g in groups if (g.region == "backbone") == is_backbone]
        removed = sum(g.size - keep[g.name] for g in members)
        assert removed == math.ceil(0.5 * sum(g.size for g in members))


def paper_share_width(support: torch.Tensor, share: float) -> int:
    """Lv et al.: the fewest highest-S channels whose cumulative share of ΣS reaches T."""
    values = sorted(support.double().tolist(), reverse=True)
    total, running = sum(values), 0.0
    for i, v in enumerate(values):
        running += v
        if running / total >= share - 1e-12:
            return i + 1
    return len(values)


def test_fgp_share_rule_is_the_papers_cumulative_share_fixed_and_under_a_budget(setting):
    model, groups, batches = setting
    scores, ctx = vss_scores(setting, "fgp")
    reference = ref_fgp(model, groups, batches)
    ctx.allocation = "paper"
    fixed = plan_channels(get_method("fgp", share=0.8), ctx, scores)
    for g in groups:
        assert g.size - len(fixed.removed.get(g.name, [])) == paper_share_width(reference[g.name], 0.8), g.name
    budgeted = plan_channels(get_method("fgp"), ctx, scores)  # channels budget, ratio 0.3: T is searched
    assert budgeted.budget_applied and 0 < budgeted.knob < 1
    assert budgeted.planned_reduction == pytest.approx(RATIO, abs=0.02)
    # the budget's knob sits where some layer's width jumps, so float32 vs float64 sums may fall either side
    share = 1 - budgeted.knob
    for g in groups:
        widths = {paper_share_width(reference[g.name], share + d) for d in (-1e-5, 0.0, 1e-5)}
        assert g.size - len(budgeted.removed.get(g.name, [])) in widths, g.name


# ---------------------------------------------------------------------------------------------
# taylor's group form on a residual model


def ref_taylor_gate(model, groups, batches):
    """NVlabs' gate form: one multiplicative gate g = 1 per coupled channel on every member BN's output;
    importance (g·∂L/∂g)² per minibatch, averaged."""
    net = copy.deepcopy(model).eval()
    modules = dict(net.named_modules())
    gates = {g.name: torch.ones(g.size, requires_grad=True) for g in groups}
    total, n = {}, 0
    for images, labels in batches():
        handles = [modules[b].register_forward_hook(lambda m, i, o, gate=gates[g.name]: o * gate.view(1, -1, 1, 1))
                   for g in groups for b, _ in g.bns]
        loss = F.cross_entropy(net(images)["out"], labels, ignore_index=255)
        for h in handles:
            h.remove()
        grads = torch.autograd.grad(loss, list(gates.values()), allow_unused=True)
        for name, grad in zip(gates, grads, strict=True):
            value = torch.zeros(len(gates[name]), dtype=torch.float64) if grad is None else grad.double() ** 2
            total[name] = total.get(name, 0) + value
        n += 1
    return {k: v / n for k, v in total.items()}


def test_taylor_gate_form_is_the_square_of_the_summed_contribution_on_a_residual_model():
    model = tiny_model("resnet50_seg")
    groups = groups_of(model, output_layers_of(model, "resnet50_seg"))
    batches = synthetic_batches(SAMPLES)
    coupled = [g for g in groups if len(g.bns) > 1]
    assert coupled  # the residual streams couple several BNs
    gate, _ = vss_scores((model, groups, batches), "taylor", group="gate")
    mean, _ = vss_scores((model, groups, batches), "taylor")
    reference = ref_taylor_gate(model, groups, batches)
    for g in groups:
        if float(reference[g.name].abs().max()) == 0:  # a group the main loss does not reach (aux head)
            assert float(gate[g.name].abs().max()) == 0
            continue
        assert spearman(gate[g.name], reference[g.name]) >= 0.99, g.name
        assert torch.allclose(gate[g.name].double(), reference[g.name], rtol=1e-3, atol=1e-12), g.name
    assert any(spearman(gate[g.name], mean[g.name]) < 0.99 for g in coupled)  # the option changes the ranking
