"""Models from outside the registry (smp, import path, entry point) behind vss's model contract.

vss models return a dict `{"out": logits}` (plus `"aux"` when an aux head is built, torchvision's
convention) and declare a `ModelStructure`. `SegmentationAdapter` wraps a network that returns a
bare tensor; `derive_structure` reads the regions from the network's attributes when its factory
gave none.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn

from vss_cli.errors import ConfigError
from vss_cli.models.registry import ModelStructure

WRAPPED = "net"  # the attribute the adapter keeps the network under (a prefix of every module name)
# attribute layouts a structure is derived from: (backbone, head, aux)
LAYOUTS = (
    (("encoder",), ("decoder", "segmentation_head"), ("classification_head",)),  # segmentation_models_pytorch
    (("backbone",), ("classifier",), ("aux_classifier",)),  # torchvision's segmentation models
)
OUTPUT_HEADS = ("segmentation_head", "classifier", "aux_classifier")


class SegmentationAdapter(nn.Module):
    """`{"out": net(x)}` for a network that returns its logits as a tensor; a dict with "out" passes
    through. `aux_classifier` reads and writes the network's own (so vss can detach it at inference)."""

    def __init__(self, net: nn.Module, dropped: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.net = net
        self.dropped = dropped  # modules of the network replaced by nn.Identity at build (`drop_idle_modules`)

    def external_state(self, state: dict) -> dict:
        """A state_dict of the bare network (as its own code saves it) in this adapter's keys: under
        `net.`, without the tensors of dropped modules. Keys already under `net.` pass unchanged."""
        if any(k.startswith(f"{WRAPPED}.") for k in state):
            return state
        return {f"{WRAPPED}.{k}": v for k, v in state.items()
                if not any(k.startswith(f"{d}.") for d in self.dropped)}

    @property
    def aux_classifier(self) -> nn.Module | None:
        return getattr(self.net, "aux_classifier", None)

    def __setattr__(self, name: str, value) -> None:
        if name == "aux_classifier":
            setattr(self.net, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.net(x)
        if isinstance(y, torch.Tensor):
            return {"out": y}
        if isinstance(y, dict) and "out" in y:
            return y
        raise ConfigError(f"{type(self.net).__name__} returned {type(y).__name__}: a vss model returns its logits "
                          "as a tensor or as a dict with 'out' (and 'aux' for an aux head), torchvision's convention")


def prefixed(structure: ModelStructure, prefix: str = WRAPPED) -> ModelStructure:
    """The structure of a network as seen through the adapter (every name under `prefix.`)."""
    def under(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(f"{prefix}.{n}" if n else prefix for n in names)

    return ModelStructure(backbone=under(structure.backbone), head=under(structure.head), aux=under(structure.aux),
                          output_layers=under(structure.output_layers), never_prune=under(structure.never_prune))


def derive_structure(net: nn.Module, num_classes: int, what: str) -> ModelStructure:
    """Regions from the network's attributes: smp's `encoder` / `decoder` / `segmentation_head`
    (aux: `classification_head`) or torchvision's `backbone` / `classifier` / `aux_classifier`.
    Top-level modules outside the layout count as head; the output layers are the last conv of
    each head with `num_classes` outputs."""
    children = dict(net.named_children())
    for backbone, head, aux in LAYOUTS:
        if backbone[0] in children and head[-1] in children:
            aux = tuple(n for n in aux if children.get(n) is not None)
            rest = tuple(n for n in children if n not in (*backbone, *head, *aux))
            head = tuple(n for n in head if n in children) + rest
            heads = [n for n in OUTPUT_HEADS if children.get(n) is not None]
            outputs = tuple(filter(None, (last_classifier(net, n, num_classes) for n in heads)))
            return ModelStructure(backbone=backbone, head=head, aux=aux, output_layers=outputs)
    raise ConfigError(f"{what} declares no structure and has neither encoder/decoder/segmentation_head nor "
                      "backbone/classifier attributes: attach a vss_cli.models.ModelStructure as `vss_structure` "
                      "or return (model, structure) from the factory (docs/your-model.md)")


def last_classifier(net: nn.Module, head: str, num_classes: int) -> str | None:
    """The name of the last conv under `head` with `num_classes` outputs, or None."""
    found = None
    for name, m in net.get_submodule(head).named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.out_channels == num_classes:
            found = f"{head}.{name}" if name else head
    return found


def groupnorm_layers(net: nn.Module) -> tuple[str, ...]:
    """GroupNorms of more than one group: Torch-Pruning removes channels from them without changing
    `num_groups`, which breaks (or silently regroups) them, so their groups are never pruned."""
    return tuple(n for n, m in net.named_modules() if isinstance(m, nn.GroupNorm) and m.num_groups > 1)


def check_output_layers(net: nn.Module, structure: ModelStructure, num_classes: int, what: str) -> None:
    """Every declared output layer exists with `num_classes` outputs, and there is at least one."""
    modules = dict(net.named_modules())
    if not structure.output_layers:
        raise ConfigError(f"{what} declares no output layer: name the final classifier conv(s) in "
                          "ModelStructure.output_layers")
    for name in structure.output_layers:
        m = modules.get(name)
        if m is None:
            raise ConfigError(f"{what} declares output layer {name!r}, which it does not have: "
                              "fix ModelStructure.output_layers")
        out = getattr(m, "out_channels", getattr(m, "out_features", None))
        if out != num_classes:
            raise ConfigError(f"{what}'s output layer {name} has {out} outputs, not num_classes={num_classes}: "
                              "name the final classifier conv in ModelStructure.output_layers")


def adapt(result, num_classes: int, what: str, dropped: tuple[str, ...] = ()) -> nn.Module:
    """A factory's result as a vss model: `net` or `(net, structure)`, a structure attached as
    `net.vss_structure` or derived from its attributes, GroupNorm groups kept whole, wrapped in a
    `SegmentationAdapter`."""
    net, structure = result if isinstance(result, tuple) else (result, getattr(result, "vss_structure", None))
    if not isinstance(net, nn.Module):
        raise ConfigError(f"{what} returned {type(net).__name__}, not a torch.nn.Module: return the network "
                          "(or (network, ModelStructure))")
    if structure is not None and not isinstance(structure, ModelStructure):
        raise ConfigError(f"{what} gave a structure of type {type(structure).__name__}: use "
                          "vss_cli.models.ModelStructure")
    if structure is None:
        structure = derive_structure(net, num_classes, what)
    check_output_layers(net, structure, num_classes, what)
    never = tuple(dict.fromkeys((*structure.never_prune, *groupnorm_layers(net))))
    structure = replace(structure, never_prune=never)
    if "vss_structure" in net.__dict__:
        del net.vss_structure  # the adapter carries it, under the adapter's names
    model = SegmentationAdapter(net, dropped)
    model.vss_structure = prefixed(structure)
    return model


def idle_modules(net: nn.Module, size: tuple[int, int] = (64, 64)) -> list[str]:
    """Modules with weights that never run in an eval forward pass, or run but feed no output
    (smp's PSPNet encoder at depth 3 runs MobileNetV2 blocks past its last stage and drops them).
    Torch-Pruning's graph is traced back from the outputs, so it cannot keep such modules consistent."""
    ran: dict[str, torch.Tensor] = {}
    modules = {n: m for n, m in net.named_modules() if n and next(m.parameters(recurse=False), None) is not None}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: ran.__setitem__(n, out)) for n, m in modules.items()]
    modes = {m: m.training for m in net.modules()}
    try:
        with torch.enable_grad():
            y = net.eval()(torch.zeros(1, 3, *size))
            total = sum(v.sum() for v in (y.values() if isinstance(y, dict) else [y]))
            feeds = [n for n, t in ran.items() if isinstance(t, torch.Tensor) and t.requires_grad]
            grads = torch.autograd.grad(total, [ran[n] for n in feeds], allow_unused=True) if feeds else []
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training
    dead = {n for n, g in zip(feeds, grads, strict=True) if g is None}
    return [n for n in modules if n not in ran or n in dead]


PROBE_SIZES = ((64, 64), (128, 128), (256, 256))  # the smallest input a network takes (PAN needs 128)


def drop_idle_modules(net: nn.Module) -> list[str]:
    """Replace `idle_modules` by `nn.Identity` (the outputs are unchanged); returns their names.
    The probe uses the smallest of `PROBE_SIZES` the network runs at; none: nothing is dropped
    (the forward failure is left to the command that runs it, with its own input size)."""
    for size in PROBE_SIZES:
        try:
            names = idle_modules(net, size)
            break
        except RuntimeError:
            continue
    else:
        return []
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, nn.Identity())
    return names
