"""`--budget latency`: the ratio is the fraction of the parent's measured latency to remove.

The per-layer latency table (`pruning.latency`) is measured once per device / dtype / batch / input
size / architecture and cached in the store: a `profile` run keyed by exactly that, with the table as
its `latency-table` artifact; a later prune with the same key reads it instead of measuring. The
knapsack's saving is in table time (standalone convs), not in whole-model time, so the target is
calibrated: plan, prune a copy, time it against the parent (paired, as deployed), and rescale the
table saving by requested / achieved until the measured speedup is within 5% of the request or
the steps run out; the closest plan wins.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vss_cli.engine.progress import log
from vss_cli.engine.speed import DTYPES, TimingSetup, compare_to_parent, device_name
from vss_cli.fileio import write_json
from vss_cli.pruning.budget import BudgetFit
from vss_cli.pruning.latency import (
    LatencyTable,
    build_table,
    conv_calls,
    knapsack_widths,
    table_signature,
    time_conv,
)
from vss_cli.pruning.planner import plan_from_widths
from vss_cli.pruning.surgery import apply_plan, build_graph, collect_groups, output_layers_of
from vss_cli.workflows.common import default_out_dir, recorded, save_artifact, versions

CALIBRATION_STEPS = 4
CLOSE_ENOUGH = 0.05  # stop calibrating when the measured speedup is this close (relative) to the request
TABLE_NAME = "latency_table.json"


@dataclass
class LatencySetting:
    """Where and how latency is measured (the table's cache key besides the architecture)."""

    ratio: float
    round_to: int | str
    device: torch.device
    dtype: str = "fp32"
    batch: int = 1
    input_size: tuple[int, int] = (64, 64)
    iters: int = 20

    def measured_on(self) -> dict:
        return {"device": device_name(self.device), "dtype": self.dtype, "batch": self.batch,
                "input_size": list(self.input_size), "round_to": self.round_to, "torch": torch.__version__}


@dataclass
class LatencyOutcome:
    """What the latency budget did (prune-run metrics and notes)."""

    requested_speedup: float
    measured_speedup: float = float("nan")
    table_saving_fraction: float = float("nan")
    calibration_steps: int = 0
    table_run: str = ""
    table_reused: bool = False
    trials: list = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {"latency_requested_speedup": self.requested_speedup,
                "latency_measured_speedup": self.measured_speedup,
                "latency_table_saving_fraction": self.table_saving_fraction,
                "latency_calibration_steps": float(self.calibration_steps),
                "latency_table_reused": float(self.table_reused)}


def cached_table(store, model, groups, setting: LatencySetting) -> tuple[LatencyTable, str, bool]:
    """The latency table for this model and setting: from the store when measured before, else measured
    now and recorded as a `profile` run. Returns (table, profile run id, reused)."""
    from vss_cli.store import config_key

    calls = conv_calls(model, setting.input_size)
    config = {"kind": "profile", **setting.measured_on(), "layers": table_signature(groups, calls)}
    key = config_key(config)
    hit = store.find_completed(config_key=key, kind="profile")
    if hit is not None:
        import json

        return LatencyTable.from_json(json.loads(Path(store.artifact_path(hit.id, kind="latency-table")).read_text())), \
            hit.id, True
    run = store.create_run(kind="profile", config=config, config_key=key, versions=versions(setting.device),
                           status="running")
    out_dir = default_out_dir("profile", run.id, None)
    store.update_run(run.id, out_dir=str(out_dir.resolve()))
    with recorded(store, run.id, during="measuring the latency table"):
        dtype = DTYPES[setting.dtype]

        def timer(call):
            return time_conv(call, batch=setting.batch, device=setting.device, dtype=dtype)

        table = build_table(groups, calls, setting.round_to, timer)
        table.measured_on = setting.measured_on()
        path = save_artifact(store, run.id, "latency-table", out_dir / TABLE_NAME,
                             lambda p: write_json(p, table.to_json()))
    log(f"latency table: {len(table.ms)} layers, {table.conv_timings} conv shapes timed -> {path}")
    return table, run.id, False


def pruned_copy(model, scores, keep: dict[str, int]):
    """A copy of `model` pruned to the kept widths (lowest-scored channels go)."""
    trial = copy.deepcopy(model)
    ignored = output_layers_of(trial)
    dg = build_graph(trial, ignored)
    groups = collect_groups(trial, dg, ignored)
    apply_plan(dg, groups, plan_from_widths(groups, scores, keep))
    return trial.eval()


def calibrate(model, groups, scores, table: LatencyTable, setting: LatencySetting,
              outcome: LatencyOutcome) -> dict[str, int]:
    """Kept widths whose measured speedup is closest to 1 / (1 - ratio), rescaling the table saving."""
    target = outcome.requested_speedup
    setup = TimingSetup(dtype=setting.dtype, warmup=max(2, setting.iters // 5), iters=setting.iters)
    fraction, best = setting.ratio, None
    auto = setting.round_to == "auto"
    for _ in range(CALIBRATION_STEPS):
        keep = knapsack_widths(groups, scores, table, fraction * table.total_ms(), auto=auto)
        cmp = compare_to_parent(model, pruned_copy(model, scores, keep), input_size=setting.input_size,
                                batch=setting.batch, device=setting.device, setup=setup)
        error = abs(cmp.speedup / target - 1)
        outcome.trials.append({"table_fraction": fraction, "speedup": cmp.speedup, "layers": len(keep)})
        if best is None or error < best[0]:
            best = (error, keep, cmp.speedup, fraction)
        if error <= CLOSE_ENOUGH:
            break
        achieved = 1 - 1 / cmp.speedup  # fraction of latency removed
        fraction = fraction * setting.ratio / achieved if achieved > 0.01 else fraction * 1.5
        fraction = min(0.99, max(0.01, fraction))
    _, keep, outcome.measured_speedup, outcome.table_saving_fraction = best
    outcome.calibration_steps = len(outcome.trials)
    return keep


def latency_planner(store, setting: LatencySetting):
    """A `plan(ctx, scores) -> BudgetFit` for the latency budget (`budget.LatencyBudget`); its outcome
    is filled in."""
    outcome = LatencyOutcome(requested_speedup=1 / (1 - setting.ratio))

    def plan(ctx, scores):
        table, outcome.table_run, outcome.table_reused = cached_table(store, ctx.model, ctx.groups, setting)
        keep = calibrate(ctx.model, ctx.groups, scores, table, setting, outcome)
        details = {"latency_budget": {"requested_speedup": outcome.requested_speedup,
                                      "measured_speedup": outcome.measured_speedup, "table_run": outcome.table_run,
                                      "table_reused": outcome.table_reused, "trials": outcome.trials}}
        log(f"latency budget: x{outcome.measured_speedup:.3f} measured for x{outcome.requested_speedup:.3f} "
            f"requested after {outcome.calibration_steps} step(s)")
        # the knapsack spreads the cut, not --allocation
        return BudgetFit(keep, None, 1 - 1 / outcome.measured_speedup, rule="latency-knapsack", details=details)

    return plan, outcome
