"""`vss eval`: a candidate against its baseline — accuracy, retention, real speed, complexity, channel
ratio, reconstruction error and (optionally) how each criterion's ranking agrees with an oracle.

The JSON report keeps the seed guide's key names (DESIGN §6) so existing analysis scripts read it;
every number also lands as a flat metric row on the `eval` run. `FLOPs` strings count
multiply-accumulates (MACs), as ptflops, torchvision and most segmentation papers do when they say
"FLOPs"; the numeric `flops` field is 2 × `macs`. `--dtype` applies to the speed measurement;
accuracy is always measured in fp32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from vss_cli.data.checks import preflight
from vss_cli.data.specs import DatasetSpec
from vss_cli.engine.progress import log
from vss_cli.errors import ConfigError
from vss_cli.fileio import write_json
from vss_cli.pruning.checkpoint import LoadedCheckpoint, load_checkpoint
from vss_cli.report.schema import EvalReport, PruningRatios, ratio
from vss_cli.store.queue import RunStore
from vss_cli.workflows.common import (
    check_model_name,
    check_writable,
    default_out_dir,
    recorded,
    resolve_device,
    save_artifact,
    versions,
)
from vss_cli.workflows.options import EvalOptions
from vss_cli.workflows.paths import CheckpointRef, choose_input_size, recorded_input_size, resolve_checkpoints
from vss_cli.workflows.prechecks import check_baseline_is_ancestor, check_file_option, check_input_size

ORACLE_METHOD_CHOICES = ("candidate", "all")
REPORT_NAME = "evaluation_report.json"


@dataclass
class EvalSetting:
    """Everything resolved and checked before the run row is written."""

    device: torch.device
    baseline_ref: CheckpointRef
    candidate_ref: CheckpointRef
    baseline: LoadedCheckpoint
    candidate: LoadedCheckpoint
    dataset: str
    data_root: str | None
    spec: DatasetSpec
    input_size: tuple[int, int]
    val: Dataset
    oracle_methods: list[str] = field(default_factory=list)
    oracle_note: str = ""


@dataclass
class EvalOutcome:
    run_id: str
    out_dir: Path
    report_path: Path
    report: EvalReport
    metrics: dict[str, float]


# ----------------------------------------------------------------------------------------------
# validation and resolution (nothing is written until all of it passed)


def validate(opts: EvalOptions) -> None:
    from vss_cli.data.specs import SPLITS
    from vss_cli.engine.speed import DTYPES

    checks = [
        (opts.batch_size >= 1, f"--batch-size {opts.batch_size} must be at least 1"),
        (opts.speed_iters >= 1, f"--speed-iters {opts.speed_iters} must be at least 1"),
        (opts.warmup >= 0, f"--warmup {opts.warmup} must be 0 or more"),
        (opts.oracle_samples >= 0, f"--oracle-samples {opts.oracle_samples} must be 0 (off) or more"),
        (opts.oracle_layers >= 1, f"--oracle-layers {opts.oracle_layers} must be at least 1"),
        (opts.oracle_methods in ORACLE_METHOD_CHOICES,
         f"--oracle-methods {opts.oracle_methods} is unknown: use candidate or all"),
        (opts.reconstruction_batches >= 0, f"reconstruction batches {opts.reconstruction_batches} must be 0 or more"),
        (opts.dtype in DTYPES, f"--dtype {opts.dtype} is unknown: use fp32, bf16 or fp16"),
        (opts.split in SPLITS, f"split '{opts.split}' is unknown: use one of {', '.join(SPLITS)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _pruning_method_of(loaded: LoadedCheckpoint, ref: CheckpointRef, store, depth: int = 6) -> str | None:
    """The criterion that pruned a checkpoint: its own `extra`, else the nearest prune run up its lineage."""
    if loaded.extra.get("method"):
        return str(loaded.extra["method"])
    frontier = [ref.run] if ref.run is not None else []
    for _ in range(depth):
        found = [r.config.get("method") for r in frontier if r.kind == "prune" and r.config.get("method")]
        if found:
            return str(found[0])
        frontier = [parent for r in frontier for _, parent in store.parents(r.id)]
    return None


def _oracle_methods(opts: EvalOptions, candidate: LoadedCheckpoint, ref: CheckpointRef, store) -> tuple[list, str]:
    from vss_cli.pruning.registry import list_methods, method_class

    if opts.oracle_samples == 0:
        return [], ""
    if opts.oracle_methods == "all":
        return list_methods(), ""
    method = _pruning_method_of(candidate, ref, store)
    if method is None:
        return [], "the candidate records no pruning method: pass --oracle-methods all to compare every criterion"
    method_class(method)  # an unknown method is bad input, reported before the run starts
    return [method], ""


def resolve(opts: EvalOptions, store: RunStore) -> EvalSetting:
    """Check options, checkpoints, class counts and the dataset; raises VssError on bad input."""
    from vss_cli.data import build_dataset, recorded_spec
    from vss_cli.engine.speed import check_setup, timing_setup

    validate(opts)
    device = resolve_device(opts.device)
    check_setup(timing_setup(opts), device)
    refs = resolve_checkpoints(store, {"--baseline": opts.baseline, "--candidate": opts.candidate})
    base_ref, cand_ref = refs["--baseline"], refs["--candidate"]
    base, cand = load_checkpoint(base_ref.path, device), load_checkpoint(cand_ref.path, device)
    check_model_name(opts.model, base.spec.name, base_ref.path)
    check_model_name(opts.model, cand.spec.name, cand_ref.path)
    if base.spec.num_classes != cand.spec.num_classes:
        raise ConfigError(
            f"baseline {base_ref.path} predicts {base.spec.num_classes} classes but candidate {cand_ref.path} "
            f"predicts {cand.spec.num_classes}: compare a candidate pruned from this baseline"
        )
    check_baseline_is_ancestor(store, base_ref, cand_ref, base, cand)
    recorded_ds = cand.dataset or base.dataset
    dataset = opts.dataset or recorded_ds.get("name") or "synthetic"
    same_dataset = recorded_ds.get("name") == dataset
    data_root = opts.data_root or (recorded_ds.get("data_root") if same_dataset else None)
    spec = recorded_spec(dataset, data_root, recorded_ds)
    if spec.num_classes != cand.spec.num_classes:
        raise ConfigError(f"the models predict {cand.spec.num_classes} classes but {dataset} has "
                          f"{spec.num_classes}: pass the --dataset they were trained on")
    recorded_size = (recorded_input_size(cand.dataset, cand_ref.run) if same_dataset else None)
    input_size = choose_input_size(opts.input_size, recorded_size, spec.default_input_size,
                                   recorded_from=str(cand_ref.path))
    check_input_size(base.model, input_size, device)
    preflight(spec, data_root, (opts.split,))
    val = build_dataset(spec, opts.split, data_root=data_root, input_size=input_size, train=False)
    methods, note = _oracle_methods(opts, cand, cand_ref, store)
    return EvalSetting(device=device, baseline_ref=base_ref, candidate_ref=cand_ref, baseline=base, candidate=cand,
                       dataset=dataset, data_root=data_root, spec=spec, input_size=input_size, val=val,
                       oracle_methods=methods, oracle_note=note)


# ----------------------------------------------------------------------------------------------
# the measurements


def flops_params(model: nn.Module, input_size: tuple[int, int]) -> dict:
    """The seed's `FLOPs`/`Params` strings (FLOPs string = MACs) plus exact numbers."""
    from vss_cli.engine.complexity import count_complexity

    c = count_complexity(model, input_size)
    return {"FLOPs": c.macs_str, "Params": c.params_str, "FLOPs_unit": "MACs", "macs": c.macs,
            "flops": c.flops, "params": c.params, "backend": c.backend, "input_size": list(input_size)}


def pruning_ratios(baseline: LoadedCheckpoint, candidate: LoadedCheckpoint) -> PruningRatios:
    """Share of the baseline's prunable conv output channels that the candidate no longer has."""
    from vss_cli.pruning.surgery import output_layers_of, prunable_channels

    before = prunable_channels(baseline.model, output_layers_of(baseline.model, baseline.spec.name))
    after = prunable_channels(candidate.model, output_layers_of(candidate.model, candidate.spec.name))
    return PruningRatios(channel_prune_ratio=1.0 - after / before if before else float("nan"),
                         channels_before=before, channels_after=after)


@torch.no_grad()
def reconstruction_mse(baseline: nn.Module, candidate: nn.Module, loader, batches: int,
                       device: torch.device) -> float | None:
    """Mean squared difference of the two models' `out` logits over the first `batches` batches."""
    if batches == 0:
        return None
    baseline.eval()
    candidate.eval()
    total, count = 0.0, 0
    for i, (images, _) in enumerate(loader):
        if i >= batches:
            break
        images = images.to(device)
        diff = baseline(images)["out"].float() - candidate(images)["out"].float()
        total += float(diff.double().pow(2).sum())
        count += diff.numel()
    return total / count if count else None


def oracle_section(setting: EvalSetting, opts: EvalOptions) -> dict:
    """Oracle importance on the baseline and every requested criterion's agreement with it."""
    from vss_cli.pruning.oracle_run import OracleSetup, run_oracle
    from vss_cli.workflows.prune import sample_source

    return run_oracle(OracleSetup(
        model=setting.baseline.model, model_name=setting.baseline.spec.name, methods=setting.oracle_methods,
        images=setting.val, samples=opts.oracle_samples, layers=opts.oracle_layers, batch_size=opts.batch_size,
        device=setting.device, num_classes=setting.baseline.spec.num_classes, ignore_index=setting.spec.ignore_index,
        input_size=setting.input_size, note=setting.oracle_note,
        score_batches=sample_source(setting.spec, setting.data_root, setting.input_size, opts.oracle_samples,
                                    opts.batch_size, 0),
    ))


def compare(setting: EvalSetting, opts: EvalOptions) -> tuple[EvalReport, dict[str, np.ndarray]]:
    """Every measurement of the report; returns (the report, confusion matrices by side)."""
    from vss_cli.data import build_loader
    from vss_cli.engine.speed import measure_speed_pair, speedups, timing_setup
    from vss_cli.engine.train import evaluate

    spec, device = setting.spec, setting.device
    base, cand = setting.baseline.model, setting.candidate.model
    loader = build_loader(setting.val, batch_size=opts.batch_size, train=False, num_workers=opts.num_workers)
    base_metrics, base_cm = evaluate(base, loader, spec.num_classes, spec.ignore_index, device)
    cand_metrics, cand_cm = evaluate(cand, loader, spec.num_classes, spec.ignore_index, device)
    base_speed, cand_speed = measure_speed_pair(base, cand, input_size=setting.input_size, batch=opts.batch_size,
                                                device=device, setup=timing_setup(opts))
    report = EvalReport(
        baseline=str(setting.baseline_ref.path), candidate=str(setting.candidate_ref.path),
        dataset=setting.dataset, split=opts.split, input_size=list(setting.input_size),
        baseline_results=base_metrics.to_report(spec.class_names),
        candidate_results=cand_metrics.to_report(spec.class_names),
        miou_retention=ratio(cand_metrics.miou, base_metrics.miou),
        pixel_accuracy_retention=ratio(cand_metrics.pixel_accuracy, base_metrics.pixel_accuracy),
        baseline_speed=base_speed.to_report(), candidate_speed=cand_speed.to_report(),
        speedups=speedups(base_speed, cand_speed),
        baseline_flops_params=flops_params(base, setting.input_size),
        candidate_flops_params=flops_params(cand, setting.input_size),
        pruning_ratios=pruning_ratios(setting.baseline, setting.candidate),
        oracle_analysis=oracle_section(setting, opts) if opts.oracle_samples > 0 else None,
        reconstruction_mse=reconstruction_mse(base, cand, loader, opts.reconstruction_batches, device),
    )
    return report, {"baseline": base_cm.numpy(), "candidate": cand_cm.numpy()}


# ----------------------------------------------------------------------------------------------
# files and the run


def _run_config(opts: EvalOptions, setting: EvalSetting) -> dict:
    """Every option that can change the report (the checkpoints enter the key through their sha256)."""
    return {**asdict(opts), "baseline": None, "candidate": None, "report": None, "out_dir": None,
            "num_workers": None, "dataset": setting.dataset, "data_root": setting.data_root,
            "input_size": list(setting.input_size), "device": setting.device.type,
            "oracle_methods_resolved": setting.oracle_methods, "kind": "eval"}


def eval_run(opts: EvalOptions, store: RunStore) -> EvalOutcome:
    """Evaluate a candidate against its baseline; records an `eval` run, its report and its metrics."""
    from vss_cli.store import config_key, file_sha256

    setting = resolve(opts, store)
    check_file_option(opts.report, "--report")  # before the run row: a refused --report leaves no trace
    check_writable(store, None, opts.report)
    config = _run_config(opts, setting)
    key = config_key(config, [file_sha256(setting.baseline_ref.path), file_sha256(setting.candidate_ref.path)])
    parents = [(ref.run_id, relation) for ref, relation in
               ((setting.baseline_ref, "baseline-of"), (setting.candidate_ref, "evaluates")) if ref.run_id]
    run = store.create_run(kind="eval", config=config, parents=parents, config_key=key,
                           versions=versions(setting.device), status="running")
    out_dir = default_out_dir("eval", run.id, Path(opts.out_dir) if opts.out_dir else None).resolve()
    store.update_run(run.id, out_dir=str(out_dir))
    with recorded(store, run.id):
        report, confusions = compare(setting, opts)
        report.run_id = run.id
        for side, mat in confusions.items():
            cm = {"class_names": list(setting.spec.class_names), "ignore_index": setting.spec.ignore_index,
                  "rows": "ground truth", "columns": "prediction", "matrix": mat.astype(np.int64).tolist()}
            save_artifact(store, run.id, "confusion", out_dir / f"{side}_confusion.json", lambda p, d=cm: write_json(p, d))
        report_path = save_artifact(store, run.id, "report", Path(opts.report).resolve() if opts.report
                                    else out_dir / REPORT_NAME, lambda p: write_json(p, report.to_json()))
        metrics = report.flat_metrics()
        store.add_metrics(run.id, metrics)
    log(f"eval run {run.id}: mIoU {report.baseline_results['mIoU']:.4f} -> {report.candidate_results['mIoU']:.4f}"
        f", latency x{report.speedup_latency:.2f} -> {report_path}")
    return EvalOutcome(run_id=run.id, out_dir=out_dir, report_path=report_path, report=report, metrics=metrics)
