"""Oracle channel importance and how well a criterion's ranking agrees with it.

The true importance of a channel is the increase of the loss on a fixed set of images when that
channel's BatchNorm output is zeroed, one channel at a time with everything else intact (Molchanov
et al., "Importance Estimation for Neural Network Pruning", CVPR 2019, §3). We keep the signed
increase rather than the paper's squared change: for deciding what to prune, a channel whose removal
lowers the loss is the least important one, not an important one. For a group that couples several
BatchNorms (a residual stream), channel c is zeroed in all of them, which is what pruning it removes.

The comparison runs on the *baseline* (the model the criterion scored), never on the pruned model:
ranking the survivors of a pruned model says nothing about the criterion. Agreement is reported as
Spearman ρ (Pearson correlation of average ranks), Kendall τ-b and the overlap of the 20% least
important channels, per layer and averaged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vss_cli.engine.complexity import inference_graph
from vss_cli.engine.progress import progress_bar
from vss_cli.pruning.oracle_replay import ReplayCache, frozen_modules, tile, trace_calls
from vss_cli.pruning.surgery import LayerGroup

# ----------------------------------------------------------------------------------------------
# rank statistics (written out here, with ties handled as scipy.stats does)


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of the ranks they span."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    start = 0
    while start < len(x):
        stop = start + 1
        while stop < len(x) and sorted_x[stop] == sorted_x[start]:
            stop += 1
        ranks[order[start:stop]] = (start + stop + 1) / 2.0  # mean of ranks start+1 .. stop
        start = stop
    return ranks


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's ρ with ties: the Pearson correlation of average ranks; NaN when either side is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def kendall_tau_b(a: Sequence[float], b: Sequence[float], chunk: int = 512) -> float:
    """Kendall's τ-b: (concordant − discordant) / sqrt(pairs untied in a × pairs untied in b)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    concordance, untied_x, untied_y = 0.0, 0.0, 0.0
    for start in range(0, len(x), chunk):  # row blocks of the n×n sign matrices keep memory bounded
        sx = np.sign(x[start:start + chunk, None] - x[None, :])
        sy = np.sign(y[start:start + chunk, None] - y[None, :])
        concordance += float((sx * sy).sum())
        untied_x += float(np.abs(sx).sum())
        untied_y += float(np.abs(sy).sum())
    denom = np.sqrt(untied_x * untied_y)  # every pair is counted twice in each sum: the factors cancel
    return float(concordance / denom) if denom > 0 else float("nan")


def bottom_overlap(scores: Sequence[float], truth: Sequence[float], fraction: float = 0.2) -> float:
    """Share of the `fraction` least important channels by `truth` that `scores` also puts there."""
    s, t = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    k = max(1, int(round(fraction * len(t))))
    lowest_s = set(np.argsort(s, kind="stable")[:k].tolist())
    lowest_t = set(np.argsort(t, kind="stable")[:k].tolist())
    return len(lowest_s & lowest_t) / k


# ----------------------------------------------------------------------------------------------
# the oracle


def bn_of_group(group: LayerGroup) -> list[nn.Module]:
    """The group's BatchNorms that carry its channels (same width as the group)."""
    return [bn for _, bn in group.bns if bn.num_features == group.size]


def choose_groups(groups: Sequence[LayerGroup], k: int) -> list[LayerGroup]:
    """`k` groups with a BatchNorm, spread evenly over `groups`' order (first and last included)."""
    with_bn = [g for g in groups if bn_of_group(g)]
    if k >= len(with_bn):
        return list(with_bn)
    if k <= 1:
        return with_bn[:max(k, 0)]
    picks = sorted({int(round(i)) for i in np.linspace(0, len(with_bn) - 1, k)})
    return [with_bn[i] for i in picks]


@dataclass
class OracleImportance:
    """Loss increase per channel of each chosen group, and what computing it cost."""

    importance: dict[str, torch.Tensor]
    base_loss: float
    images: int
    forward_passes: int
    seconds: float


def pixel_losses(logits: torch.Tensor, labels: torch.Tensor, copies: int, ignore_index: int) -> torch.Tensor:
    """Summed cross-entropy of the `out` logits for each of `copies` stacked copies of one minibatch."""
    tiled = labels.repeat(copies, *([1] * (labels.dim() - 1)))
    loss = F.cross_entropy(logits.float(), tiled, ignore_index=ignore_index, reduction="none")
    return loss.reshape(copies, -1).double().sum(1)


def _masking_hooks(bns: Sequence[nn.Module], mask: dict) -> list:
    def multiply(_module, _inputs, output):
        return output * mask["value"].to(output.dtype)

    return [bn.register_forward_hook(multiply) for bn in bns]


@dataclass
class _Ablation:
    """One group's ablation over the fixed images: summed losses per channel and the passes it took."""

    group: LayerGroup
    per_pass: int
    totals: torch.Tensor = field(init=False)
    passes: int = 0

    def __post_init__(self) -> None:
        self.totals = torch.zeros(self.group.size, dtype=torch.float64)

    def chunks(self) -> list[list[int]]:
        c = self.group.size
        return [list(range(s, min(c, s + self.per_pass))) for s in range(0, c, self.per_pass)]

    def minibatch(self, model: nn.Module, frozen: list[nn.Module], images: torch.Tensor, labels: torch.Tensor,
                  ignore_index: int, tick: Callable[[], None]) -> None:
        """Ablate every channel on one minibatch: the frozen modules run once, the rest once per chunk."""
        bns = bn_of_group(self.group)
        cache = ReplayCache(frozen)
        cache.capture(model, images)
        state = {"copies": 1, "value": None}
        b = images.shape[0]
        self.passes += 1
        with cache.replaying(lambda: state["copies"]):
            hooks = _masking_hooks(bns, state)
            try:
                for chunk in self.chunks():
                    mask = torch.ones(len(chunk), b, self.group.size, 1, 1, device=images.device)
                    mask[torch.arange(len(chunk)), :, chunk] = 0.0
                    state.update(copies=len(chunk), value=mask.reshape(len(chunk) * b, self.group.size, 1, 1))
                    logits = model(tile(images, len(chunk), b))["out"]
                    self.totals[chunk] += pixel_losses(logits, labels, len(chunk), ignore_index).cpu()
                    self.passes += 1
                    tick()
            finally:
                for h in hooks:
                    h.remove()


@torch.no_grad()
def oracle_importance(model: nn.Module, groups: Sequence[LayerGroup],
                      batches: Sequence[tuple[torch.Tensor, torch.Tensor]], *, ignore_index: int = 255,
                      channels_per_pass: int = 8) -> OracleImportance:
    """For every channel of every group: loss with that channel's BN output zeroed − loss of the intact model.

    Runs in eval mode on the inference graph (aux head detached: the loss reads only `out`), without
    gradients; weights and statistics are untouched. Per group and minibatch, what lies below the
    group's first BatchNorm runs once and is cached (`oracle_replay`); the rest runs once per
    `channels_per_pass` channels, their masked copies stacked in the batch.
    """
    t0 = time.perf_counter()
    per_pass = max(1, int(channels_per_pass))
    ablations = [_Ablation(g, per_pass) for g in groups]
    total = len(batches) * sum(len(a.chunks()) for a in ablations)
    with inference_graph(model) as net, progress_bar("oracle", total=total) as update:
        base_sum, pixels = 0.0, 0
        for images, labels in batches:
            base_sum += float(pixel_losses(net(images)["out"], labels, 1, ignore_index)[0])
            pixels += int((labels != ignore_index).sum())
        for ablation in ablations:
            trace = trace_calls(net, batches[0][0][:1], bn_of_group(ablation.group))
            if not any(bn in trace.calls for bn in bn_of_group(ablation.group)):
                continue  # the group's BNs run only in the aux head: zeroing them cannot change `out`
            frozen = frozen_modules(net, trace)
            ablation.passes += 1
            for images, labels in batches:
                ablation.minibatch(net, frozen, images, labels, ignore_index, update)
    base = base_sum / max(pixels, 1)
    importance = {a.group.name: a.totals / max(pixels, 1) - base if a.passes else torch.zeros_like(a.totals)
                  for a in ablations}
    return OracleImportance(importance=importance, base_loss=base, images=sum(len(x) for x, _ in batches),
                            forward_passes=len(batches) + sum(a.passes for a in ablations),
                            seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------
# agreement of a criterion with the oracle


@dataclass
class LayerAgreement:
    group: str
    channels: int
    spearman: float
    kendall: float
    overlap: float


@dataclass
class MethodAgreement:
    """One criterion against the oracle: per layer and the mean over layers (NaN layers left out)."""

    method: str
    layers: list[LayerAgreement] = field(default_factory=list)
    spearman: float = float("nan")
    kendall: float = float("nan")
    overlap: float = float("nan")
    seconds: float = 0.0
    note: str = ""
    error: str | None = None

    def to_report(self) -> dict:
        return asdict(self)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def agreement(method: str, scores: Mapping[str, torch.Tensor], importance: Mapping[str, torch.Tensor],
              fraction: float = 0.2) -> MethodAgreement:
    """Compare `scores` (lower = pruned first) with the oracle's importance on the groups both cover."""
    layers = []
    for name, truth in importance.items():
        if name not in scores:
            continue
        s = scores[name].detach().double().cpu().numpy()
        t = truth.detach().double().cpu().numpy()
        if s.shape != t.shape:
            raise ValueError(f"{method} scored {name} with {s.shape[0]} values, the layer has {t.shape[0]} channels")
        layers.append(LayerAgreement(group=name, channels=len(t), spearman=spearman_rho(s, t),
                                     kendall=kendall_tau_b(s, t), overlap=bottom_overlap(s, t, fraction)))
    return MethodAgreement(
        method=method, layers=layers, spearman=_nanmean([x.spearman for x in layers]),
        kendall=_nanmean([x.kendall for x in layers]), overlap=_nanmean([x.overlap for x in layers]),
    )


@dataclass
class OracleReport:
    """The `oracle_analysis` block of the evaluation report."""

    samples: int
    fraction: float
    base_loss: float
    layers: list[dict]
    importance: dict[str, list[float]]
    methods: dict[str, MethodAgreement]
    seconds: float  # the oracle and every criterion's scoring
    forward_passes: int
    oracle_seconds: float = 0.0  # the oracle importance alone
    scoring: dict = field(default_factory=dict)
    note: str = ""

    def to_report(self) -> dict:
        d = asdict(self)
        d["methods"] = {k: v.to_report() for k, v in self.methods.items()}
        return d

    @classmethod
    def build(cls, imp: OracleImportance, groups: Sequence[LayerGroup], methods: dict[str, MethodAgreement],
              *, fraction: float, scoring: dict, note: str = "") -> OracleReport:
        return cls(
            samples=imp.images, fraction=fraction, base_loss=imp.base_loss,
            layers=[{"group": g.name, "channels": g.size, "region": g.region,
                     "bns": [n for n, bn in g.bns if bn.num_features == g.size]} for g in groups],
            importance={k: v.tolist() for k, v in imp.importance.items()}, methods=methods,
            seconds=imp.seconds + sum(m.seconds for m in methods.values()), forward_passes=imp.forward_passes,
            oracle_seconds=imp.seconds,
            scoring=scoring, note=note,
        )
