"""Which criterion beats random when every cell costs the same? (issue 12, the measured table)

Trains the default synthetic baseline (U-Net width 0.25, 64×96, the dataset's recipe) for `--epochs`,
reports how far the magnitude criterion moved off its initial values (per-layer Spearman ρ between the
l1 filter scores at initialisation and after training, and the median filter change ‖w − w₀‖/‖w₀‖), then prunes
copies of it with every method × allocation × seed through the prune workflow (`prune_model`) under
`--budget macs` at `--ratio`, without fine-tuning, evaluates each on the validation split, and prints
mIoU mean ± std over seeds with the verdict against random (`vss_cli.report.verdict`).

    nice -n 10 python benchmarks/fair_compare.py                    # defaults: 12 epochs, ratio 0.5, seeds 0,1,2
    python benchmarks/fair_compare.py --baseline base.pt --out cells.json   # train once, reuse afterwards
    python benchmarks/fair_compare.py --epochs 2 --methods l1,random --seeds 0,1
    python benchmarks/fair_compare.py --baseline base.pt --allocations paper --finetune-epochs 5   # + a fine-tuned column

Measured: 17 minutes on a shared 2-core CPU with one thread (training 336 s, 81 cells 656 s, of which
slimming's sparse phases and DMCP's searches are most); with a cached `--baseline`, about 11.
slimming's and DMCP's `prepare()` run once per (method, seed) and are reused by the allocations:
the allocation only enters at the plan, after prepare and score.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from vss_cli.data import build_dataset, build_loader, get_spec
from vss_cli.engine.complexity import count_complexity
from vss_cli.engine.progress import progress_bar
from vss_cli.engine.train import TrainHooks, evaluate
from vss_cli.fileio import atomic_output, write_json
from vss_cli.models import build_model
from vss_cli.pruning.registry import get_method, list_methods
from vss_cli.report.verdict import verdict_footer, verdict_rows
from vss_cli.workflows.prune import PruneOptions, make_fit, prune_model, sample_source

DATASET = "synthetic"
BY = ("allocation", "method", "ratio")


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def l1_movement(initial: torch.nn.Module, trained: torch.nn.Module) -> tuple[float, float]:
    """(mean per-layer Spearman ρ of l1 filter scores init vs trained, median over filters of ‖w − w₀‖/‖w₀‖)."""
    rhos, changes = [], []
    for (_, a), (_, b) in zip(initial.named_modules(), trained.named_modules(), strict=True):
        if isinstance(a, torch.nn.Conv2d) and a.out_channels > 2:
            wa, wb = a.weight.detach().flatten(1), b.weight.detach().flatten(1)
            rhos.append(spearman(wa.abs().sum(1), wb.abs().sum(1)))
            changes += ((wb - wa).norm(dim=1) / wa.norm(dim=1)).tolist()
    return statistics.fmean(rhos), statistics.median(changes)


def baseline_model(args) -> tuple[torch.nn.Module, torch.nn.Module, float]:
    """(initial, trained, training seconds): trained with the dataset's recipe, or loaded from `--baseline`."""
    spec = get_spec(DATASET)
    torch.manual_seed(0)
    model = build_model(spec.default_model, spec.num_classes, **spec.default_model_kwargs)
    initial = copy.deepcopy(model)
    if args.baseline and Path(args.baseline).exists():
        saved = torch.load(args.baseline, map_location="cpu")
        model.load_state_dict(saved["state"])
        return initial, model.eval(), saved["seconds"]
    t0 = time.perf_counter()
    make_fit(DATASET, None, spec.default_input_size, 0, "cpu")(model, TrainHooks(), args.epochs)
    seconds = time.perf_counter() - t0
    if args.baseline:
        with atomic_output(args.baseline, "wb") as f:
            torch.save({"state": model.state_dict(), "seconds": seconds, "epochs": args.epochs}, f)
    return initial, model.eval(), seconds


def reuse_preparation(method, key: tuple, cache: dict):
    """A method whose prepare() (a sparse phase, a width search) runs once per (method, seed): the first
    call records the model state, method state and report it leaves; later calls restore them."""
    if key in cache:
        state, prepared, report = cache[key]
        prepared = copy.deepcopy(prepared)

        def restore(ctx):
            ctx.model.load_state_dict(state)
            return copy.deepcopy(report)

        prepared.prepare = restore
        return prepared
    original = method.prepare

    def record(ctx):
        report = original(ctx)
        cache[key] = ({k: v.detach().clone() for k, v in ctx.model.state_dict().items()}, copy.deepcopy(method),
                      copy.deepcopy(report))
        return report

    method.prepare = record
    return method


def grid_options(method: str, args) -> dict:
    """The method options a `vss bench` cell with `--finetune-epochs args.training_epochs` would use: a method
    that trains itself (slimming's sparse phase, DMCP's search) gets at most that many epochs (equal budget)."""
    from vss_cli.workflows.bench_options import BenchOptions
    from vss_cli.workflows.options import TrainOptions

    return BenchOptions(finetune=TrainOptions(epochs=args.training_epochs)).options_of(method)


def cell(baseline, method: str, allocation: str, seed: int, args, val_loader, cache: dict) -> dict:
    spec = get_spec(DATASET)
    input_size = spec.default_input_size
    opts = PruneOptions(ckpt="", method=method, global_ratio=args.ratio, budget="macs", allocation=allocation,
                        seed=seed, samples=args.samples)
    model = copy.deepcopy(baseline)
    t0 = time.perf_counter()
    report, _ = prune_model(
        model, spec.default_model, reuse_preparation(get_method(method, **grid_options(method, args)), (method, seed), cache),
        opts,
        input_size=input_size, device="cpu",
        batch_source=sample_source(DATASET, None, input_size, args.samples, opts.batch_size, seed),
        fit=make_fit(DATASET, None, input_size, seed, "cpu"), num_classes=spec.num_classes,
        ignore_index=spec.ignore_index, count=lambda m: count_complexity(m, input_size))
    metrics, _ = evaluate(model, val_loader, spec.num_classes, spec.ignore_index, progress=False)
    tuned = None
    if args.finetune_epochs and allocation in args.finetune_allocations.split(",") and seed in args.finetune_seeds:
        make_fit(DATASET, None, input_size, seed, "cpu")(model, TrainHooks(), args.finetune_epochs)
        tuned = evaluate(model.eval(), val_loader, spec.num_classes, spec.ignore_index, progress=False)[0].miou
    return {"allocation": allocation, "method": method, "ratio": args.ratio, "seed": seed, "miou": metrics.miou,
            "miou_finetuned": tuned,
            "macs_reduction": report.macs_reduction, "channel_prune_ratio": report.channel_prune_ratio,
            "rule": report.notes.get("allocation_rule"), "seconds": time.perf_counter() - t0}


def table(cells: list[dict], baseline_miou: float) -> Table:
    rows = verdict_rows(cells, by=BY)
    macs = {}
    for c in cells:
        macs.setdefault((c["allocation"], c["method"]), []).append(c["macs_reduction"])
    out = Table(title=f"mIoU after pruning, no fine-tuning (baseline {baseline_miou:.4f})")
    tuned: dict = {}
    for c in cells:
        if c.get("miou_finetuned") is not None:
            tuned.setdefault((c["allocation"], c["method"]), []).append(c["miou_finetuned"])
    for col in ("allocation", "method", "seeds", "mIoU mean ± std", "vs_random", "p(better)", "MACs ↓",
                "mIoU fine-tuned (seeds)"):
        out.add_column(col)
    for r in rows:
        ft = tuned.get((r.key["allocation"], r.method))
        out.add_row(r.key["allocation"], r.method, str(r.n), r.mean_std, r.vs_random or "—",
                    "—" if r.p_better is None else f"{r.p_better:.3f}",
                    f"{statistics.fmean(macs[(r.key['allocation'], r.method)]):.1%}",
                    f"{statistics.fmean(ft):.4f} ({len(ft)})" if ft else "—")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=get_spec(DATASET).default_epochs)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(list_methods()))
    parser.add_argument("--allocations", default="paper,uniform,global")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--training-epochs", type=int, default=0,
                        help="the cells' training budget after the baseline, as bench's --finetune-epochs: methods "
                             "that train themselves get at most this many epochs (0: slimming prunes the raw |γ|, "
                             "DMCP searches its minimum of 1 epoch)")
    parser.add_argument("--finetune-epochs", type=int, default=0,
                        help="fine-tune each pruned cell of --finetune-allocations for this many epochs and add its "
                             "mIoU as a column (0: none)")
    parser.add_argument("--finetune-allocations", default="paper")
    parser.add_argument("--finetune-seeds", default="0,1,2")
    parser.add_argument("--out", default=None, help="write the cells as JSON here")
    parser.add_argument("--baseline", default=None, help="cache of the trained baseline (written if missing)")
    args = parser.parse_args()
    args.finetune_seeds = [int(s) for s in args.finetune_seeds.split(",")]
    torch.set_num_threads(1)
    console = Console(width=120)
    spec = get_spec(DATASET)
    initial, baseline, seconds = baseline_model(args)
    rho, change = l1_movement(initial, baseline)
    val = build_loader(build_dataset(DATASET, "val", input_size=spec.default_input_size, train=False),
                       batch_size=spec.default_batch_size, train=False)
    base_miou = evaluate(baseline, val, spec.num_classes, spec.ignore_index, progress=False)[0].miou
    console.print(f"baseline: {spec.default_model} {spec.default_model_kwargs}, {args.epochs} epochs in {seconds:.0f}s, "
                  f"val mIoU {base_miou:.4f}; l1 scores vs init: mean per-layer Spearman ρ {rho:.3f}, "
                  f"median filter change ‖w − w0‖/‖w0‖ {change:.1%}")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(m, a, s) for a in args.allocations.split(",") for m in args.methods.split(",") for s in seeds]
    cells, cache = [], {}
    with progress_bar("cells", len(jobs)) as advance:
        for method, allocation, seed in jobs:
            cells.append(cell(baseline, method, allocation, seed, args, val, cache))
            advance(info=f"{allocation} {method} seed {seed}: mIoU {cells[-1]['miou']:.3f}")
    if args.out:
        write_json(args.out, {"baseline_miou": base_miou, "epochs": args.epochs, "l1_rho": rho, "cells": cells})
    console.print(table(cells, base_miou))
    console.print(verdict_footer(by=BY))


if __name__ == "__main__":
    main()
