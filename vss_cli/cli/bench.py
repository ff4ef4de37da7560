"""`vss bench`: a method × ratio × seed grid that resumes, skips and shares cells between processes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from vss_cli.cli import options as o
from vss_cli.cli.output import console, err_console
from vss_cli.cli.state import STATE
from vss_cli.workflows.bench_options import (
    BENCH_BUDGET,
    DEFAULT_FINETUNE_EPOCHS,
    DEFAULT_METHODS,
    DEFAULT_RATIOS,
    DEFAULT_SEEDS,
    BenchOptions,
)
from vss_cli.workflows.options import EvalOptions, PruneOptions, TrainOptions, default_of

Baseline = Annotated[str | None, typer.Option("--baseline", help="baseline checkpoint (.pt) or run id; default: "
                                              "reuse (or train) the dataset's default baseline")]
Methods = Annotated[str, typer.Option("--methods", help="comma-separated pruning methods (see `vss prune --help`)")]
Ratios = Annotated[str, typer.Option("--ratios", help="comma-separated global pruning ratios, each in (0, 1)")]
Seeds = Annotated[str, typer.Option("--seeds", help="comma-separated seeds (pruning samples, fine-tuning)")]
FinetuneEpochs = Annotated[int, typer.Option("--finetune-epochs", help="fine-tuning epochs per cell, the same "
                                             "schedule for every cell (0 = evaluate the pruned model as is)")]
FinetuneLr = Annotated[float | None, typer.Option("--finetune-lr", help="fine-tuning learning rate (dataset default)")]
BaselineEpochs = Annotated[int | None, typer.Option("--baseline-epochs", help="epochs when bench trains the "
                                                    "baseline (dataset default)")]
Width = Annotated[float | None, typer.Option("--width", help="channel multiplier of a baseline bench trains")]
OutDir = Annotated[Path | None, typer.Option("--out-dir", help="folder of benchmark_summary.json and the cells' "
                                             "files (default runs/bench/<bench run id>)")]
SkipExisting = Annotated[bool, typer.Option("--skip-existing", help="reuse completed cells (this grid's or "
                                            "another's) whose artifacts still match their sha256; rerun the rest")]
ForceNew = Annotated[bool, typer.Option("--force-new", help="start this grid in an --out-dir that holds another "
                                        "grid's summary (that summary is kept, renamed after its bench run)")]
Grace = Annotated[float, typer.Option("--worker-grace", help="seconds without a heartbeat after which another "
                                      "process takes over a running cell")]
Join = Annotated[str | None, typer.Option("--join", help="BENCH_ID or latest: take cells of that recorded grid "
                                          "with exactly its options (only --device and --worker-grace may be given)")]
PrepareOnly = Annotated[bool, typer.Option("--prepare-only", help="record the grid, its baseline and its cells, "
                                           "then stop (workers take the cells with --join)")]
NprocPerCell = Annotated[int, typer.Option("--nproc-per-cell", help="run each cell's fine-tune under torchrun "
                                           "on N processes (gloo on CPU, nccl on CUDA; global batch = N x batch)")]
PredictPanels = Annotated[int, typer.Option("--predict", help="also draw N baseline-vs-candidate prediction panels "
                                            "per cell (a predict run under the cell; see `vss predict`)")]
PruneBatch = Annotated[int, typer.Option("--prune-batch-size", help="minibatch size while scoring channels")]
BenchOption = Annotated[list[str] | None, typer.Option("--option", help="method option METHOD:KEY=VALUE for that "
                                                       "method's cells, e.g. fgp:share=0.8 (repeatable)")]

# CLI parameter -> field of each step template (every field a cell does not set itself; tests check it)
PRUNE_FIELDS = {"dataset": "dataset", "data_root": "data_root", "input_size": "input_size", "round_to": "round_to",
                "allocation": "allocation", "normalizer": "normalizer", "budget": "budget", "samples": "samples",
                "prune_batch_size": "batch_size", "device": "device", "model": "model", "dtype": "dtype",
                "speed_check_iters": "speed_check_iters", "require_speedup": "require_speedup"}
EVAL_FIELDS = {"batch_size": "batch_size", "input_size": "input_size", "dataset": "dataset", "data_root": "data_root",
               "device": "device", "dtype": "dtype", "channels_last": "channels_last", "speed_iters": "speed_iters",
               "warmup": "warmup", "oracle_samples": "oracle_samples", "oracle_layers": "oracle_layers",
               "oracle_methods": "oracle_methods", "reconstruction_batches": "reconstruction_batches",
               "split": "split", "num_workers": "num_workers", "model": "model", "fuse_bn": "fuse_bn",
               "compile": "compile", "cuda_graphs": "cuda_graphs"}
FINETUNE_FIELDS = {"dataset": "dataset", "data_root": "data_root", "input_size": "input_size",
                   "finetune_epochs": "epochs", "finetune_lr": "lr", "max_iters_per_epoch": "max_iters_per_epoch",
                   "device": "device", "num_workers": "num_workers", "tensorboard": "tensorboard"}
BASELINE_FIELDS = {"dataset": "dataset", "data_root": "data_root", "input_size": "input_size", "model": "model",
                   "baseline_epochs": "epochs", "max_iters_per_epoch": "max_iters_per_epoch", "device": "device"}
BenchBudget = Annotated[str, typer.Option("--budget", help="what each of --ratios counts: macs (every cell of a "
                                         "ratio removes the same share of MACs), channels, or latency (measured "
                                         "on --device/--dtype/--batch-size/--input-size)")]
CELL_COLUMNS = ("method", "ratio", "seed", "mIoU", "retain", "speedup", "MACs↓", "ch↓", "status", "note")
E, P = o.EVAL, o.PRUNE


def _pick(given: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    return {target: given[name] for name, target in mapping.items()}


def build_options(given: dict[str, Any]) -> BenchOptions:
    """BenchOptions from the command's parameters (by the field tables above)."""
    given = {**given, "data_root": str(given["data_root"]) if given["data_root"] else None,
             "input_size": o.parse_size(given["input_size"]), "round_to": o.parse_round_to(given["round_to"]),
             "tensorboard": str(given["tensorboard"]) if given["tensorboard"] else None}
    methods = o.parse_list(given["methods"])
    method_options = {m: kv for m, kv in o.parse_method_options(given["option"], methods=methods).items() if m}
    baseline_train = TrainOptions(**_pick(given, BASELINE_FIELDS),
                                  model_kwargs={"width": given["width"]} if given["width"] is not None else {})
    return BenchOptions(
        methods=methods, ratios=o.parse_list(given["ratios"], float), seeds=o.parse_list(given["seeds"], int),
        prune=PruneOptions(**_pick(given, PRUNE_FIELDS)), finetune=TrainOptions(**_pick(given, FINETUNE_FIELDS)),
        eval=EvalOptions(**_pick(given, EVAL_FIELDS)), method_options=method_options, baseline=given["baseline"],
        baseline_train=baseline_train, out_dir=str(given["out_dir"]) if given["out_dir"] else None,
        skip_existing=given["skip_existing"], force_new=given["force_new"], worker_grace=given["worker_grace"],
        nproc_per_cell=given["nproc_per_cell"], predict=given["predict"],
    )


JOIN_OWN = ("join", "device", "worker_grace")  # what a joining worker sets for itself


CONTINUE_OWN = ("out_dir", "skip_existing", "device", "worker_grace")  # the seed's resume command gives only these


def _given_beyond(given: dict[str, Any], own: tuple[str, ...]) -> list[str]:
    """The parameters given with a value other than their default, besides `own`."""
    import inspect

    defaults = {n: p.default for n, p in inspect.signature(bench).parameters.items()}
    return [n for n, v in given.items() if n not in own and v != defaults.get(n)]


def _check_join(given: dict[str, Any]) -> None:
    """`--join` takes the grid's recorded options: refuse grid options given beside it instead of ignoring them."""
    from vss_cli.errors import ConfigError

    extra = _given_beyond(given, JOIN_OWN)
    if extra:
        flags = ", ".join("--" + n.replace("_", "-") for n in extra)
        raise ConfigError(f"--join runs the grid with its recorded options: drop {flags} (only --device and "
                          "--worker-grace apply to a joining worker)")


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _num(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _table_rows(rows) -> list[dict]:
    from vss_cli.report.tables import speed_mark

    return [{
        "method": r.method, "ratio": f"{r.ratio:g}", "seed": r.seed, "status": SHORT_STATUS.get(r.status, r.status),
        "mIoU": _num(r.metric("miou"), ".4f"), "retain": _num(r.metric("miou_retention"), ".3f"),
        "speedup": _num(r.metric("speedup_latency"), ".2f"),
        "ch↓": _pct(r.metric("channel_reduction")), "MACs↓": _pct(r.metric("macs_reduction")),
        "note": "; ".join(p for p in ("reused" if r.skipped else "", r.error or "", speed_mark(
            r.metric("speedup_latency"), r.speed_noisy, r.slower_than_parent).replace(") (", "; ").strip(" ()")) if p),
    } for r in rows]


SHORT_STATUS = {"completed": "done"}  # the one long status word, so the column stays narrow
SPEED_LEGEND = ("note: noisy = the paired timings spread widely (IQR/median); disputed = eval's paired timing "
                "says faster, prune's paired check found it no faster than its parent")
KEY_COLUMNS = ("method", "ratio", "seed", "mIoU", "retain", "speedup")  # never cut or folded, whatever the width


def _cell_table(run_id: str, rows) -> Table:
    """One row per cell: the key values whole at any width, the other columns fold (never cut)."""
    table = Table(title=f"vss bench {run_id}", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in CELL_COLUMNS:
        table.add_column(name, no_wrap=name in KEY_COLUMNS, overflow="fold", min_width=min(len(name), 6),
                         justify="left" if name in ("method", "status", "note") else "right")
    for row in _table_rows(rows):
        table.add_row(*(str(row[name]) for name in CELL_COLUMNS))
    return table


NOT_IN_RERUN = ("join", "prepare_only", "out_dir", "force_new")  # left out of the command the closing lines suggest


def _flag(name: str, value: Any, default: Any) -> list[str]:
    """The command-line words that give parameter `name` the value `value` (none when it is the default)."""
    flag = "--" + name.replace("_", "-")
    if value == default or value is None:
        return []
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(value, list):
        return [w for v in value for w in (flag, str(v))]
    text = str(value)
    return [flag, text if text and all(c.isalnum() or c in "-_.,/:=+" for c in text) else repr(text)]


def rerun_command(given: dict[str, Any], **changes: Any) -> str:
    """`vss bench ...` with this invocation's options (those not at their default) and `changes` applied."""
    import inspect
    import os

    defaults = {n: p.default for n, p in inspect.signature(bench).parameters.items()}
    words = ["vss"]
    if STATE.db and STATE.db != os.environ.get("VSS_DB"):
        from vss_cli.store.engine import mask

        words += ["--db", mask(STATE.db)]  # a printed URL never shows its password
    if STATE.threads:
        words += ["--threads", str(STATE.threads)]
    words.append("bench")
    for name, value in {**given, **changes}.items():
        if name not in NOT_IN_RERUN:
            words += _flag(name, value, defaults.get(name))
    return " ".join(words)


def _closing_answer(given: dict[str, Any], opts: BenchOptions, outcome) -> None:
    """The answer in words (report.answer) and, when the grid cannot tell, the command that would."""
    from vss_cli.report.answer import answer, more_seeds_grid

    found = answer(outcome.rows, budget=opts.prune.budget, finetune_epochs=opts.finetune_epochs)
    for line in found.lines:
        console.print(line, highlight=False, markup=False)
    if found.decided:
        return
    methods, seeds = more_seeds_grid(opts.methods, opts.seeds)
    done = {(r.method, r.ratio, r.seed) for r in outcome.rows if r.status == "completed"}
    wanted = [(m, r, s) for m in methods for r in opts.ratios for s in seeds]
    todo = sum(cell not in done for cell in wanted)
    pace = _seconds_per_cell(outcome.rows)
    eta = f", about {_minutes(todo * pace)} at this grid's pace of {pace:.0f} s a cell" if pace else ""
    console.print(f"To tell, run the grid with random and {len(seeds)} seeds (reuses the {len(wanted) - todo} "
                  f"cells done, runs {todo} more{eta}):", highlight=False, markup=False)
    command = rerun_command(given, methods=",".join(methods), seeds=",".join(map(str, seeds)), skip_existing=True)
    console.print(f"  {command}", highlight=False, markup=False, soft_wrap=True)


def _seconds_per_cell(rows) -> float | None:
    """Mean wall time of the grid's completed cells, reused ones included (None when none is known)."""
    store = STATE.store()
    times = [d for r in rows if r.status == "completed" and (d := store.get_run(r.cell_run).duration_s) is not None]
    return sum(times) / len(times) if times else None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def bench(
    baseline: Baseline = None, methods: Methods = ",".join(DEFAULT_METHODS),
    ratios: Ratios = ",".join(f"{r:g}" for r in DEFAULT_RATIOS), seeds: Seeds = ",".join(map(str, DEFAULT_SEEDS)),
    finetune_epochs: FinetuneEpochs = DEFAULT_FINETUNE_EPOCHS, finetune_lr: FinetuneLr = None, out_dir: OutDir = None,
    skip_existing: SkipExisting = False, force_new: ForceNew = False, join: Join = None, prepare_only: PrepareOnly = False,
    dataset: o.Dataset = None, data_root: o.DataRoot = None, model: o.Model = None, width: Width = None,
    baseline_epochs: BaselineEpochs = None, input_size: o.InputSize = None, max_iters_per_epoch: o.MaxIters = None,
    round_to: o.RoundToAuto = str(P["round_to"]), allocation: o.Allocation = P["allocation"],
    normalizer: o.Normalizer = P["normalizer"], budget: BenchBudget = BENCH_BUDGET, samples: o.Samples = P["samples"],
    prune_batch_size: PruneBatch = P["batch_size"], option: BenchOption = None,
    speed_check_iters: o.SpeedCheckIters = P["speed_check_iters"], require_speedup: o.RequireSpeedup = P["require_speedup"],
    fuse_bn: o.FuseBn = E["fuse_bn"], compile: o.Compile = E["compile"], cuda_graphs: o.CudaGraphs = E["cuda_graphs"],
    batch_size: o.EvalBatch = E["batch_size"], dtype: o.TimingDtype = E["dtype"],
    channels_last: o.ChannelsLast = E["channels_last"], speed_iters: o.SpeedIters = E["speed_iters"],
    warmup: o.WarmupIters = E["warmup"], oracle_samples: o.OracleSamples = E["oracle_samples"],
    oracle_layers: o.OracleLayers = E["oracle_layers"], oracle_methods: o.OracleMethods = E["oracle_methods"],
    reconstruction_batches: o.ReconBatches = E["reconstruction_batches"], split: o.Split = E["split"],
    num_workers: o.NumWorkers = E["num_workers"], device: o.Device = "auto",
    worker_grace: Grace = default_of(BenchOptions, "worker_grace"),
    nproc_per_cell: NprocPerCell = default_of(BenchOptions, "nproc_per_cell"),
    predict: PredictPanels = default_of(BenchOptions, "predict"), tensorboard: o.TensorBoard = None,
) -> None:
    """Prune → fine-tune → evaluate every method × ratio × seed against one baseline.

    Rerunning the same command continues the grid (completed cells are never rerun, failed ones are
    retried); several processes on one database share its cells, and `--join BENCH_ID` adds a worker
    to a recorded grid without repeating its options. Writes benchmark_summary.json.
    """
    given = dict(locals())  # the parameters, by name (build_options maps them onto the templates)
    if join is not None:
        _check_join(given)
    else:
        from vss_cli.workflows.paths import precheck

        precheck(data_root, {"--baseline": baseline}, STATE.store())  # before torch loads: a typo fails at once
    from vss_cli.workflows.bench import bench_run

    opts = build_options(given)
    outcome = bench_run(opts, STATE.store(), join=join, prepare_only=prepare_only,
                        continue_out_dir=out_dir is not None and not _given_beyond(given, CONTINUE_OWN))
    _print_outcome(given, opts, outcome)


def _print_outcome(given: dict, opts, outcome) -> None:
    """The grid's closing screen: the cell table, the counts, the answer; exit 1 when a cell failed."""
    join = given["join"]
    stats = outcome.stats
    if outcome.prepared_only:
        console.print(f"bench run {outcome.run_id}: {stats['total_experiments']} cells recorded; add workers with "
                      f"`vss bench --join {outcome.run_id}`", highlight=False)
        return
    if join is not None and not outcome.ran:
        console.print(f"bench run {outcome.run_id}: nothing to claim ({stats['completed']} completed, "
                      f"{stats['failed']} failed of {stats['total_experiments']})", highlight=False)
        return
    console.print(_cell_table(outcome.run_id, outcome.rows))
    if any(r.speed_noisy or r.slower_than_parent for r in outcome.rows):
        console.print(SPEED_LEGEND, highlight=False, markup=False)
    console.print(
        f"{stats['completed']}/{stats['total_experiments']} cells completed ({stats['skipped']} reused), "
        f"{stats['failed']} failed -> {outcome.summary_path}", highlight=False, soft_wrap=True,
    )
    if join is None:
        _closing_answer(given, opts, outcome)
    if stats["failed"]:
        err_console.print(Text.assemble(("failed:", "bold red"), f" {stats['failed']} cell(s) failed; their errors "
                                        "are in the summary and in `vss runs show RUN`"), highlight=False)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
