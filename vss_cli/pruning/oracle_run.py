"""The oracle analysis of `vss eval --oracle-samples`: oracle importance on the baseline, then every
requested criterion scored on a copy of the same baseline and compared with it.

Each criterion is scored as `prune` would score it (same groups, same context fields) but without
its `prepare()` phase (no training a method runs as part of pruning): the scores are what `score()` gives on
the baseline as it is, which the method's note says. One criterion failing is recorded as its
error, never loses the whole evaluation.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from vss_cli.engine.progress import log
from vss_cli.pruning.base import PruneContext, PruningMethod
from vss_cli.pruning.oracle import MethodAgreement, OracleReport, agreement, choose_groups, oracle_importance
from vss_cli.pruning.registry import get_method
from vss_cli.pruning.surgery import build_graph, collect_groups, output_layers_of

PREPARE_NOTE = "scored without its prepare() phase (sparse training / search): the raw baseline's scores"


@dataclass
class OracleSetup:
    """What the oracle needs from the evaluation: the baseline, its data and the criteria to compare."""

    model: nn.Module
    model_name: str
    methods: Sequence[str]
    images: Sequence  # the fixed set (a dataset of (image, label) pairs, e.g. the eval split)
    samples: int  # --oracle-samples
    layers: int  # --oracle-layers
    batch_size: int
    device: torch.device
    num_classes: int
    ignore_index: int
    input_size: tuple[int, int]
    score_batches: Callable[[], Iterator] | None  # training minibatches the data-driven criteria score on
    fraction: float = 0.2
    channels_per_pass: int = 8
    note: str = ""


def first_images(dataset, n: int, batch_size: int, device: torch.device) -> list:
    """The first `n` images of a split as device-resident minibatches (the oracle's fixed set)."""
    n = min(n, len(dataset))
    batches = []
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        batches.append((torch.stack([x for x, _ in items]).to(device), torch.stack([y for _, y in items]).to(device)))
    return batches


def method_scores(setup: OracleSetup, method_name: str, group_names: set[str]) -> tuple[dict, str]:
    """A criterion's scores on a copy of the baseline, with the context `prune` would give it."""
    method = get_method(method_name)
    work = copy.deepcopy(setup.model)
    ignored = output_layers_of(work, setup.model_name)
    torch.manual_seed(0)
    groups = collect_groups(work, build_graph(work, ignored), ignored)
    ctx = PruneContext(model=work, groups=groups, device=setup.device, num_classes=setup.num_classes,
                       ignore_index=setup.ignore_index, samples=setup.samples, input_size=tuple(setup.input_size),
                       batch_source=setup.score_batches)
    scores = method.score(ctx)
    note = PREPARE_NOTE if type(method).prepare is not PruningMethod.prepare else ""
    return {k: v for k, v in scores.items() if k in group_names}, note


def _agreement_of(setup: OracleSetup, method_name: str, importance: dict, names: set[str]) -> MethodAgreement:
    t0 = time.perf_counter()
    try:
        scores, note = method_scores(setup, method_name, names)
        result = agreement(method_name, scores, importance, setup.fraction)
        result.note = note
    except Exception as exc:  # noqa: BLE001 - one criterion failing must not lose the whole evaluation
        log(f"oracle: {method_name} could not be scored ({type(exc).__name__}: {exc})")
        result = MethodAgreement(method=method_name, error=f"{type(exc).__name__}: {exc}")
    result.seconds = time.perf_counter() - t0
    return result


def run_oracle(setup: OracleSetup) -> dict:
    """Oracle importance on the baseline and every requested criterion's agreement with it (report dict)."""
    notes = [setup.note] if setup.note else []
    if len(setup.images) < setup.samples:
        short = (f"--oracle-samples {setup.samples} asked for more images than the split has "
                 f"({len(setup.images)}): the oracle uses {len(setup.images)}")
        log(f"warning: {short}")
        notes.append(short)
    model = setup.model
    ignored = output_layers_of(model, setup.model_name)
    groups = choose_groups(collect_groups(model, build_graph(model, ignored), ignored), setup.layers)
    batches = first_images(setup.images, setup.samples, setup.batch_size, setup.device)
    imp = oracle_importance(model, groups, batches, ignore_index=setup.ignore_index,
                            channels_per_pass=setup.channels_per_pass)
    names = {g.name for g in groups}
    results = {m: _agreement_of(setup, m, imp.importance, names) for m in setup.methods}
    scoring = {"split": "train", "samples": setup.samples, "prepare": False, "model": "baseline"}
    return OracleReport.build(imp, groups, results, fraction=setup.fraction, scoring=scoring,
                              note="; ".join(notes)).to_report()
