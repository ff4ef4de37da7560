"""`vss models check MODEL`: can vss prune this network, and how much of it?

Builds the model at a small input, traces Torch-Pruning's dependency graph and reports the prunable
groups (count, channels, share of MACs) per region, the layers left unpruned and why, and a dry run:
a prune at `ratio` of MACs under `uniform` and `paper` allocation for `l1` and one data-driven
method (scored on random images: it checks the mechanics, not the ranking), each checked for the
output shape, the MACs achieved and a bit-identical reload through replay. A network Torch-Pruning
cannot follow raises `ModelCheckError` naming the module and the op that blocks it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from vss_cli.errors import VssError

CONVS = (nn.Conv2d, nn.ConvTranspose2d)


class ModelCheckError(VssError):
    """The network cannot be pruned as it is; the message names the module and op that block it."""


@dataclass
class RegionRow:
    region: str
    groups: int
    channels: int
    macs_share: float  # share of inference MACs in convs whose output channels these groups prune


@dataclass
class UnprunedRow:
    layer: str
    kind: str
    channels: int
    reason: str


@dataclass
class DryRunRow:
    method: str
    allocation: str
    shape_kept: bool
    macs_reduction: float
    within_tolerance: bool
    replay_identical: bool


@dataclass
class ModelCheck:
    model: str
    input_size: tuple[int, int]
    macs: int
    params: int
    regions: dict[str, tuple[str, ...]]
    groups: list[RegionRow]
    unpruned: list[UnprunedRow]
    tolerance: float  # how far from the asked ratio a dry run's MACs reduction may land
    dry_runs: list[DryRunRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.dry_runs) and all(r.shape_kept and r.replay_identical for r in self.dry_runs)


def check_model(name: str, num_classes: int, input_size: tuple[int, int], *, options: dict | None = None,
                ratio: float = 0.3, data_method: str = "taylor", tolerance: float = 0.02) -> ModelCheck:
    """Every check of `vss models check`; raises `ModelCheckError` (or `ConfigError`) on a blocker."""
    from vss_cli.engine.complexity import count_complexity
    from vss_cli.models import build_model, model_structure
    from vss_cli.models.adapter import idle_modules
    from vss_cli.pruning.surgery import build_graph, collect_groups, inference_convs, output_layers_of

    options = dict(options or {})
    torch.manual_seed(0)
    model = build_model(name, num_classes, **options).eval()
    check_output(model, name, num_classes, input_size)
    ran = inference_convs(model, input_size)
    idle = [n for n in idle_modules(model, input_size) if model.get_submodule(n) in ran]
    if idle:
        raise ModelCheckError(f"{name}: {idle[0]} ({type(model.get_submodule(idle[0])).__name__}) runs but its output "
                              "reaches no model output, so Torch-Pruning's graph (traced back from the outputs) "
                              "cannot keep it consistent: return what it computes or stop computing it")
    structure = model_structure(model)
    ignored = output_layers_of(model, name)
    try:
        dg = build_graph(model, ignored, size=input_size)
    except Exception as exc:  # noqa: BLE001 - Torch-Pruning's tracer fails in many ways; all are blockers
        raise ModelCheckError(f"{name}: Torch-Pruning cannot trace the model at {input_size[0]}x{input_size[1]} "
                              f"({type(exc).__name__}: {first_line(exc)}): try a larger --input-size or simplify "
                              "the forward pass") from None
    groups = collect_groups(model, dg, ignored)
    complexity = count_complexity(model, input_size)
    check = ModelCheck(model=name, input_size=tuple(input_size), macs=complexity.macs, params=complexity.params,
                       regions=structure.regions(), groups=region_rows(model, groups, ran, input_size, complexity.macs),
                       unpruned=unpruned_rows(model, structure, dg, groups, ignored, ran), tolerance=tolerance)
    for method in ("l1", data_method):
        for allocation in ("uniform", "paper"):
            check.dry_runs.append(dry_run(model, name, num_classes, options, method, allocation, ratio, input_size,
                                          tolerance))
    return check


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_output(model: nn.Module, name: str, num_classes: int, input_size: tuple[int, int]) -> None:
    from vss_cli.errors import ConfigError

    with torch.no_grad():
        try:
            out = model(torch.zeros(1, 3, *input_size))
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's forward pass, any failure is a blocker
            raise ModelCheckError(f"{name} fails on a 1x3x{input_size[0]}x{input_size[1]} input "
                                  f"({type(exc).__name__}: {first_line(exc)}): try another --input-size") from None
    shape = tuple(out["out"].shape)
    if shape != (1, num_classes, *input_size):
        raise ModelCheckError(f"{name} returns logits of shape {shape}, not (1, {num_classes}, {input_size[0]}, "
                              f"{input_size[1]}): upsample to the input size inside the model")


def region_rows(model, groups, ran, input_size, total_macs: int) -> list[RegionRow]:
    """Per region: prunable groups, their channels and the MACs of the convs they prune."""
    from vss_cli.engine.macs import measure_conv_macs

    table = measure_conv_macs(model, input_size, next(model.parameters()).device)
    rows: dict[str, RegionRow] = {}
    for g in groups:
        if not any(c in ran for _, c in g.convs):
            continue  # aux-only: neither counted nor pruned at inference
        row = rows.setdefault(g.region, RegionRow(g.region, 0, 0, 0.0))
        row.groups += 1
        row.channels += g.size
        row.macs_share += sum(table.get(c, 0.0) for _, c in g.convs) / max(total_macs, 1)
    return sorted(rows.values(), key=lambda r: ("backbone", "head", "aux").index(r.region)
                  if r.region in ("backbone", "head", "aux") else 3)


def unpruned_rows(model, structure, dg, groups, ignored, ran) -> list[UnprunedRow]:
    """Every conv whose output channels no prunable group removes, with the reason."""
    pruned = {c for g in groups for _, c in (*g.convs, *g.partial)}
    aux_only = {c for g in groups if not any(m in ran for _, m in g.convs) for _, c in g.convs}
    names = {m: n for n, m in model.named_modules()}
    blockers = {m: names[m] for m in ignored}
    rows = []
    for name, m in model.named_modules():
        if not isinstance(m, CONVS) or (m in pruned and m not in aux_only):
            continue
        rows.append(UnprunedRow(name, type(m).__name__, int(m.out_channels),
                                unpruned_reason(name, m, dg, structure, blockers, aux_only, ran)))
    return rows


def unpruned_reason(name, module, dg, structure, blockers, aux_only, ran) -> str:
    if name in structure.output_layers:
        return "output layer: keeps num_classes outputs"
    if name in structure.never_prune:
        return "declared never_prune"
    if module in aux_only:
        return "feeds only the aux head (not pruned for inference)"
    if module not in dg.module2node:
        return "never runs in the forward pass" if module not in ran else "not traced by Torch-Pruning"
    if module.out_channels == 1:
        return "one output channel"
    if isinstance(module, nn.ConvTranspose2d):
        return "transposed conv: pruned only through the group of the conv it feeds"
    group = dg.get_pruning_group(module, dg.get_pruner_of_module(module).prune_out_channels, [0])
    coupled = [d.target.module for d, _ in group if d.target.module in blockers and dg.is_out_channel_pruning_fn(d.handler)]
    if not coupled:
        return "coupled to a group rooted elsewhere"
    kept = coupled[0]
    why = ("a GroupNorm of several groups" if isinstance(kept, nn.GroupNorm) else
           "an output layer" if blockers[kept] in structure.output_layers else "a never_prune layer")
    return f"coupled to {blockers[kept]} ({why})"


def dry_run(model, name, num_classes, options, method_name, allocation, ratio, input_size, tolerance) -> DryRunRow:
    """Prune a copy at `ratio` of MACs; check the output shape, the MACs achieved and a replayed reload."""
    from vss_cli.engine.complexity import count_complexity
    from vss_cli.models import build_model
    from vss_cli.pruning.registry import get_method
    from vss_cli.pruning.surgery import replay_history
    from vss_cli.workflows.options import PruneOptions
    from vss_cli.workflows.prune import prune_model

    pruned = copy.deepcopy(model)
    opts = PruneOptions(method=method_name, global_ratio=ratio, allocation=allocation, budget="macs", samples=4,
                        batch_size=2, round_to=1)
    method = get_method(method_name)
    try:
        report, history = prune_model(
            pruned, name, method, opts, input_size=input_size, device="cpu",
            batch_source=random_batches(num_classes, input_size), fit=None, num_classes=num_classes,
            ignore_index=255, count=lambda m: count_complexity(m, input_size))
        x = torch.randn(2, 3, *input_size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            after = pruned.eval()(x)
    except VssError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken graph surfaces as any error in the pruned forward
        raise ModelCheckError(blocker_message(name, pruned, input_size, exc)) from None
    fresh = build_model(name, num_classes, **options)
    replay_history(fresh, history)
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    with torch.no_grad():
        replayed = fresh.eval()(x)
    identical = set(replayed) == set(after) and all(torch.equal(replayed[k], after[k]) for k in after)
    return DryRunRow(method_name, allocation, shape_kept=tuple(after["out"].shape) == (2, num_classes, *input_size),
                     macs_reduction=report.macs_reduction,
                     within_tolerance=abs(report.macs_reduction - ratio) <= tolerance, replay_identical=identical)


def random_batches(num_classes: int, input_size: tuple[int, int]):
    def batches():
        g = torch.Generator().manual_seed(0)
        for _ in range(2):
            yield torch.randn(2, 3, *input_size, generator=g), torch.randint(0, num_classes, (2, *input_size), generator=g)

    return batches


def blocker_message(name: str, pruned: nn.Module, input_size: tuple[int, int], exc: BaseException) -> str:
    """One line naming the module whose forward fails after pruning, and the layer that fed it."""
    failing = failing_module(pruned, input_size)
    if failing is None:
        return (f"{name}: pruning breaks the model ({type(exc).__name__}: {first_line(exc)}): an op Torch-Pruning "
                "cannot follow changes channels; declare the layers around it in ModelStructure.never_prune")
    where, module, after, error = failing
    fed = f" after {after}" if after and after != where else ""
    return (f"{name}: after pruning, {where or 'the model'} ({type(module).__name__}) fails{fed} ({first_line(error)}): "
            "it computes on channels through an op Torch-Pruning cannot follow (fixed split sizes, a reshape/view "
            "of channels, a 1-channel map broadcast over many, a custom function); add the layer feeding it to "
            "ModelStructure.never_prune or rewrite the op")


def failing_module(model: nn.Module, input_size: tuple[int, int]):
    """(name, module, last leaf run, error) of the innermost module whose forward raises, or None."""
    names = {m: n for n, m in model.named_modules()}
    open_modules: list[nn.Module] = []
    last_leaf: list[str] = [""]

    def enter(module, _inputs):
        open_modules.append(module)

    def leave(module, _inputs, _output):
        open_modules.pop()
        if not list(module.children()):
            last_leaf[0] = names[module]

    hooks = [h for m in model.modules() for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, *input_size))
    except Exception as exc:  # noqa: BLE001 - the error is what we report
        module = open_modules[-1] if open_modules else model
        return names[module], module, last_leaf[0], exc
    finally:
        for h in hooks:
            h.remove()
    return None
