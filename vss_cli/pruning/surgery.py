"""Physical channel removal with Torch-Pruning's dependency graph.

The graph keeps residual additions, the ASPP concatenation, U-Net skip concatenations and SegNet
unpooling consistent; the final classifier convs are ignored so they keep `num_classes` outputs.
Pruning is recorded as Torch-Pruning's history (module name, out/in, indices), which checkpoints
store and `replay_history` re-applies on a freshly built model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp

TRACE_SIZE = (64, 64)
LARGER_TRACES = ((128, 128), (256, 256))
UNDECLARED = "undeclared"  # the region of every group of a model that declares no structure


@dataclass
class LayerGroup:
    """One prunable group of coupled channels, named after its root conv.

    `convs` are the Conv2d layers whose output channels this group removes (a residual group spans
    several), `bns` the BatchNorm layers on those channels; `weight` = channels removed from the
    network per group channel, used to turn a global ratio into a channel count. `partial` are convs
    and norms only some of whose output channels are this group's (a depthwise conv after a
    concatenation, as in DeepLabV3+'s decoder): pruned with the group, not scored.
    """

    name: str
    root: nn.Module
    size: int
    convs: list[tuple[str, nn.Conv2d]] = field(default_factory=list)
    bns: list[tuple[str, nn.BatchNorm2d]] = field(default_factory=list)
    consumers: list[tuple[str, nn.Module]] = field(default_factory=list)
    partial: list[tuple[str, nn.Module]] = field(default_factory=list)
    region: str = UNDECLARED

    @property
    def weight(self) -> int:
        return max(1, len(self.convs))


def _model_outputs(outputs) -> torch.Tensor:
    if isinstance(outputs, dict):
        return sum(v.sum() for v in outputs.values())
    return outputs.sum()


def resolve_modules(model: nn.Module, names: Iterable[str]) -> list[nn.Module]:
    """Modules by dotted name, skipping names that do not exist in this model (e.g. an absent aux head)."""
    found = dict(model.named_modules())
    return [found[n] for n in names if n in found]


def output_layers_of(model: nn.Module, model_name: str | None = None) -> list[nn.Module]:
    """The modules whose output channels stay: the final classifier convs that keep num_classes
    outputs and the layers the model declares never to prune (its `ModelStructure`)."""
    from vss_cli.models.registry import get_model_info, model_structure

    if getattr(model, "vss_structure", None) is None and getattr(model, "vss_model_name", None) is None:
        if model_name is None:
            raise ValueError("model name needed to find its output layers")
        structure = get_model_info(model_name).structure
    else:
        structure = model_structure(model)
    return resolve_modules(model, (*structure.output_layers, *structure.never_prune))


def build_graph(model: nn.Module, ignored: Sequence[nn.Module] = (), size: tuple[int, int] = TRACE_SIZE,
                device: torch.device | str | None = None) -> tp.DependencyGraph:
    """Trace the model (eval mode, no BN statistics touched) into a dependency graph.

    A network too deep for `size` (smp's PAN pools its 1/32 features four times more) is traced at
    the next of `LARGER_TRACES` it runs at: the graph's topology does not depend on the input size."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    sizes = [size, *(s for s in LARGER_TRACES if s[0] * s[1] > size[0] * size[1])]
    try:
        for i, trace in enumerate(sizes):
            try:
                with torch.enable_grad():
                    return tp.DependencyGraph().build_dependency(
                        model, example_inputs=torch.zeros(1, 3, *trace, device=device),
                        output_transform=_model_outputs, verbose=False)
            except RuntimeError:
                if i == len(sizes) - 1:
                    raise
    finally:
        for m, training in modes.items():
            m.training = training


def collect_groups(model: nn.Module, dg: tp.DependencyGraph, ignored: Sequence[nn.Module]) -> list[LayerGroup]:
    """Every prunable group whose root is a Conv2d, excluding groups that touch an output layer."""
    from vss_cli.models.registry import declared_structure

    structure = declared_structure(model)
    names = {m: n for n, m in model.named_modules()}
    groups = []
    for group in dg.get_all_groups(ignored_layers=list(ignored), root_module_types=[nn.Conv2d]):
        root = group[0].dep.target.module
        lg = LayerGroup(name=names[root], root=root, size=int(root.out_channels))
        for item in group:
            module, handler = item.dep.target.module, item.dep.handler
            if not isinstance(module, nn.Module) or module not in names:
                continue
            if (isinstance(module, (nn.Conv2d, nn.modules.batchnorm._BatchNorm)) and dg.is_out_channel_pruning_fn(handler)
                    and not len(item.idxs) == _out_channels(module) == lg.size):
                lg.partial.append((names[module], module))
            elif isinstance(module, nn.Conv2d) and dg.is_out_channel_pruning_fn(handler):
                lg.convs.append((names[module], module))
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and dg.is_out_channel_pruning_fn(handler):
                lg.bns.append((names[module], module))
            elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and dg.is_in_channel_pruning_fn(handler):
                lg.consumers.append((names[module], module))
        lg.region = structure.region_of(lg.name) if structure is not None else UNDECLARED
        if lg.size > 1:
            groups.append(lg)
    return groups


def _out_channels(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.num_features


def apply_plan(dg: tp.DependencyGraph, groups: Sequence[LayerGroup], plan: dict[str, Sequence[int]]) -> None:
    """Remove, for each group named in `plan`, the listed channel indices of its root conv."""
    by_name = {g.name: g for g in groups}
    for name, idxs in plan.items():
        idxs = sorted(int(i) for i in idxs)
        if not idxs:
            continue
        g = by_name[name]
        if len(idxs) >= g.size:
            raise ValueError(f"plan would empty {name}")
        group = dg.get_pruning_group(g.root, tp.prune_conv_out_channels, idxs)
        group.prune()


def replay_history(model: nn.Module, history: Sequence) -> tp.DependencyGraph:
    """Re-apply a recorded pruning history on a freshly built (unpruned) model."""
    dg = build_graph(model)
    dg.load_pruning_history([[n, bool(o), list(i)] for n, o, i in history])
    return dg


def prunable_channels(model: nn.Module, ignored: Sequence[nn.Module], within: set[nn.Module] | None = None) -> int:
    """Output channels of every Conv2d except the output layers (and, given `within`, only those
    convs): what `--budget channels` counts."""
    ignored_ids = {id(m) for m in ignored}
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d) and id(m) not in ignored_ids
               and (within is None or m in within))


def inference_convs(model: nn.Module, input_size: tuple[int, int]) -> set[nn.Module]:
    """The convs that run in one inference forward pass (eval mode, aux head detached)."""
    from vss_cli.engine.complexity import inference_graph

    ran: set[nn.Module] = set()
    device = next(model.parameters()).device
    with inference_graph(model) as graph, torch.no_grad():
        handles = [m.register_forward_hook(lambda mod, _i, _o: ran.add(mod)) for m in graph.modules()
                   if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        try:
            graph(torch.zeros(1, 3, *input_size, device=device))
        finally:
            for h in handles:
                h.remove()
    return ran


def split_inference_groups(groups: Sequence[LayerGroup], convs: set[nn.Module]) -> tuple[list, list]:
    """(groups with a conv in the inference graph, groups that only feed an auxiliary head)."""
    inference = [g for g in groups if any(c in convs for _, c in g.convs)]
    names = {g.name for g in inference}
    return inference, [g for g in groups if g.name not in names]


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv, by module name (the per-layer widths artifact)."""
    return {n: int(m.out_channels) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
