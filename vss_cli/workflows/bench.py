"""`vss bench`: a method × ratio × seed grid of prune → fine-tune → eval cells over one baseline.

Identity. The grid is a `bench` run keyed by its configuration (the baseline checkpoint's sha256, or
the config key of the baseline it trains, plus the axes and the step templates' result-relevant
fields); each cell is a `cell` run keyed by the baseline sha, method, ratio, seed and the step
settings, linked `cell-of` under the bench. Both are created once (`Store.create_run_once`), so
running the same grid again, or from several processes at once, works on the same rows. Every step is
an ordinary prune / finetune / eval run linked `step-of` from its cell in the transaction that creates
it. The bench config also records the full options, so `--join BENCH_ID` rebuilds the grid exactly.

Sharing and resuming (`store.queue`). A process claims one cell at a time and heartbeats it; a
running cell whose heartbeat is older than `worker_grace`, or whose worker process is visibly gone
(same machine and PID namespace, `identity.worker_is_dead`), is taken over (attempt + 1); inside it, steps that completed with intact artifacts are reused and
an unfinished fine-tune continues from its `last.pt`. Completed cells are never rerun; failed ones are
retried by the next invocation of the grid's command (not by `--join` workers). A process leaves when
every cell is completed or failed, so the last one out writes the complete summary.

`--skip-existing` (DESIGN §3) makes reuse exact: a completed cell counts only if its step artifacts
still exist with the recorded sha256 (otherwise it is rerun), and completed cells of *other* grids
with the same cell key are linked into this one instead of being run again.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from vss_cli.data import dataset_defaults
from vss_cli.engine.progress import log
from vss_cli.errors import ConfigError, RunNotFound
from vss_cli.report.schema import CellRow
from vss_cli.report.summary import Summary, check_out_dir, summary_owner, write_summary
from vss_cli.report.tables import summary_stats
from vss_cli.store import Run, Store, config_key
from vss_cli.store.grid import grid_cells, resolve_bench
from vss_cli.store.queue import Heartbeat
from vss_cli.workflows.bench_baseline import (
    Baseline,
    BaselineSource,
    baseline_source,
    ensure_baseline,
    explain_baseline,
    require_linked_baseline_file,
)
from vss_cli.workflows.bench_cells import CellWork, cell_intact, starting_point, work_through
from vss_cli.workflows.bench_options import BenchOptions
from vss_cli.workflows.common import infer_dataset, resolve_device, versions
from vss_cli.workflows.train import dataset_spec, inherit_dataset, resolve_options


@dataclass
class BenchOutcome:
    run_id: str
    out_dir: Path
    summary_path: Path
    summary: dict
    rows: list[CellRow]
    ran: list[str]
    skipped: list[str]
    prepared_only: bool = False

    @property
    def stats(self) -> dict:
        return summary_stats(self.rows)


# ----------------------------------------------------------------------------------------------
# options


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(opts: BenchOptions, device) -> BenchOptions:
    """Check every option before anything is written (each step's own validator on each cell's options);
    returns the options with duplicate axis values dropped."""
    from vss_cli.engine.speed import check_dtype
    from vss_cli.workflows import evaluate, prune, train

    opts = replace(opts, methods=_unique(m.strip() for m in opts.methods if m.strip()),
                   ratios=_unique(float(r) for r in opts.ratios), seeds=_unique(int(s) for s in opts.seeds))
    for axis, example in (("methods", "fpgm,sirfp"), ("ratios", "0.2,0.3,0.5"), ("seeds", "0,1,2")):
        _check(bool(getattr(opts, axis)), f"--{axis} is empty: pass a comma-separated list such as {example}")
    for s in opts.seeds:
        _check(s >= 0, f"--seeds {s} is negative: pass seeds such as 0,1,2")
    stray = sorted(set(opts.method_options) - set(opts.methods))
    _check(not stray, f"--option {stray[0] if stray else ''}:... names a method not in --methods")
    _check(opts.nproc_per_cell >= 1, f"--nproc-per-cell {opts.nproc_per_cell} must be 1 or more")
    _check(opts.worker_grace > 0, f"--worker-grace {opts.worker_grace} must be a positive number of seconds")
    _check(opts.baseline_train.epochs is None or opts.baseline_train.epochs >= 1,
           f"--baseline-epochs {opts.baseline_train.epochs} must be at least 1")
    for method, ratio in itertools.product(opts.methods, opts.ratios):
        _step_check(f"cell {method} r{ratio:g} (--methods/--ratios)", prune.validate, opts.cell_prune(method, ratio, 0))
    _step_check("fine-tuning (--finetune-*)", train.validate, opts.finetune)
    _step_check("baseline training", train.validate, opts.baseline_train)
    evaluate.validate(opts.eval)
    check_dtype(opts.eval.dtype, device)
    if opts.eval.dataset:
        from vss_cli.data import build_dataset

        build_dataset(opts.eval.dataset, "train", data_root=opts.eval.data_root)  # a missing or empty root fails here
    return opts


def _step_check(where: str, check, step_opts) -> None:
    try:
        check(step_opts)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def continued_options(store: Store, opts: BenchOptions) -> BenchOptions:
    """The seed's resume command, `vss bench --skip-existing --out-dir DIR` with no grid options: the
    recorded options of the grid whose summary DIR holds (unchanged options when it holds none)."""
    owner = summary_owner(Path(opts.out_dir))
    if not owner:
        return opts
    try:
        bench = resolve_bench(store, owner)
    except RunNotFound:
        raise ConfigError(f"--out-dir {opts.out_dir} holds the summary of bench {owner}, which this database "
                          "does not hold: pass the --db it was run with, or another --out-dir") from None
    plain = bench.config.get("options")
    if plain is None:
        raise ConfigError(f"bench {bench.id} in {opts.out_dir} was recorded without its options: continue it "
                          "with its own command line")
    recorded = BenchOptions.from_plain(plain)
    log(f"--out-dir {opts.out_dir} holds grid {bench.id} ({bench.name or _axes_name(recorded)}, {bench.status}): "
        "continuing it with its recorded options")
    continued = replace(recorded, out_dir=opts.out_dir, skip_existing=opts.skip_existing, force_new=False,
                        baseline=bench.config.get("baseline_path") or recorded.baseline)
    return continued.with_device(opts.device) if opts.device != "auto" else continued


def check_cells(opts: BenchOptions, source: BaselineSource, store: Store, device) -> None:
    """What a cell's steps would refuse only once the baseline is loaded, checked on the baseline's
    network before the first row: each step's input size, and each method × ratio's reach."""
    from vss_cli.pruning.registry import get_method
    from vss_cli.workflows.prechecks import check_input_size
    from vss_cli.workflows.prune import check_reachable

    model, name, size = _baseline_network(source, store, device)
    for where, step in (("pruning", opts.prune), ("fine-tuning", opts.finetune), ("evaluation", opts.eval)):
        _step_check(where, lambda s: check_input_size(model, s.input_size or size, device), step)
    cells = [(get_method(m, **opts.options_of(m)), r, f"cell {m} r{r:g} (--methods/--ratios): ")
             for m, r in itertools.product(opts.methods, opts.ratios)]
    check_reachable(model, name, opts.cell_prune(opts.methods[0], opts.ratios[0], 0),
                    tuple(opts.prune.input_size or size), device, cells)


def _baseline_network(source: BaselineSource, store: Store, device) -> tuple:
    """(model, model name, input size) of the grid's baseline: the given checkpoint's (its recorded size,
    else its dataset's default), else a fresh build of the network the grid would train (its structure
    is all the checks need)."""
    from vss_cli.models import build_model
    from vss_cli.pruning.checkpoint import load_checkpoint
    from vss_cli.workflows.paths import recorded_input_size

    if source.checkpoint is not None:
        loaded = load_checkpoint(source.checkpoint.path, device)
        size = recorded_input_size(loaded.dataset) or \
            dataset_defaults(loaded.dataset.get("name") or "synthetic").default_input_size
        return loaded.model, loaded.spec.name, tuple(size)
    train = resolve_options(inherit_dataset(source.train, store))
    kwargs = {k: v for k, v in train.model_kwargs.items() if k not in ("pretrained_backbone", "backbone_weights")}
    model = build_model(train.model, dataset_spec(train).num_classes, **kwargs)
    return model, train.model, tuple(train.input_size)


def join_options(store: Store, ref: str, *, device: str | None, worker_grace: float | None) -> tuple[BenchOptions, Run]:
    """The recorded options of an existing grid, for one more worker (its own device and grace)."""
    bench = resolve_bench(store, ref)
    plain = bench.config.get("options")
    if plain is None:
        raise ConfigError(f"bench {bench.id} was recorded without its options: continue it with its own command line")
    require_linked_baseline_file(store, bench)
    opts = BenchOptions.from_plain(plain)
    opts = replace(opts, out_dir=bench.out_dir or opts.out_dir, baseline=bench.config.get("baseline_path") or opts.baseline,
                   worker_grace=worker_grace or opts.worker_grace, skip_existing=False, force_new=False)
    return (opts.with_device(device) if device else opts), bench


# ----------------------------------------------------------------------------------------------
# the bench row


def _axes_name(opts: BenchOptions) -> str:
    return (f"{','.join(opts.methods)} r{','.join(f'{r:g}' for r in opts.ratios)} "
            f"s{','.join(map(str, opts.seeds))}")


def bench_identity(opts: BenchOptions, source: BaselineSource, settings: dict) -> tuple[dict, str]:
    """The bench run's config (identity plus the full options) and its key (identity only)."""
    grid = {"methods": opts.methods, "ratios": opts.ratios, "seeds": opts.seeds}
    identity = {"kind": "bench", "baseline": source.identity(), "grid": grid, **settings}
    # the key ignores the order the axes were typed in: fpgm,l1 and l1,fpgm are one grid
    key = config_key({**identity, "grid": {axis: sorted(values) for axis, values in grid.items()}})
    path = str(source.checkpoint.path) if source.checkpoint is not None else None
    return {**identity, "baseline_path": path, "options": opts.to_plain()}, key


def open_bench(store: Store, opts: BenchOptions, config: dict, key: str, device) -> tuple[Run, Path]:
    """The bench run of this grid (created once) and its output folder (`check_out_dir` has passed)."""
    folder = Path(opts.out_dir).resolve() if opts.out_dir else None
    run, created = store.create_run_once(kind="bench", config=config, config_key=key, status="pending",
                                         name=_axes_name(opts), versions=versions(device), out_dir=folder,
                                         own_out_dir=not opts.force_new)
    out_dir = Path(opts.out_dir or run.out_dir or Path("runs") / "bench" / run.id).resolve()
    if created or opts.out_dir:
        run = store.update_run(run.id, out_dir=out_dir)
    log(f"bench run {run.id} ({'new' if created else 'continuing'}) -> {out_dir}")
    return run, out_dir


def preflight_data(store: Store, opts: BenchOptions, source: BaselineSource) -> None:
    """`vss data check`'s cheap part on the grid's data (the given one, else the baseline's), before any row."""
    from vss_cli.data import get_spec, recorded_spec
    from vss_cli.data.checks import preflight
    from vss_cli.engine.checkpoint import read_checkpoint

    dataset, data_root, spec = opts.eval.dataset, opts.eval.data_root, None
    if source.checkpoint is not None:
        recorded = read_checkpoint(source.checkpoint.path).get("dataset", {})
        same = not dataset or dataset == recorded.get("name")
        dataset = dataset or recorded.get("name")
        data_root = data_root or (recorded.get("data_root") if same else None)
        spec = recorded_spec(dataset, data_root, recorded) if dataset and data_root else None
    elif source.train is not None:
        data_root = data_root or source.train.data_root
        dataset = dataset or infer_dataset(source.train.dataset, data_root)
        spec = get_spec(dataset, data_root, **source.train.dataset_options) if dataset and data_root else None
    if spec is not None:
        preflight(spec, data_root, ("train", opts.eval.split))


# ----------------------------------------------------------------------------------------------
# cells


def cell_config(baseline: Baseline, method: str, ratio: float, seed: int, settings: dict) -> dict:
    return {"kind": "cell", "baseline_sha256": baseline.sha256, "method": method, "ratio": ratio, "seed": seed,
            **settings}


def _reusable_cell(store: Store, key: str) -> Run | None:
    """A completed cell with this key from any grid whose artifacts are intact (--skip-existing)."""
    return next((c for c in store.list_runs(kind="cell", status="completed", config_key=key)
                 if cell_intact(store, c)), None)


def ensure_cells(store: Store, bench: Run, opts: BenchOptions, baseline: Baseline, settings: dict) -> list[Run]:
    """One cell row per method × ratio × seed under the bench (created once, pending)."""
    have = {cell.config_key: cell for cell in grid_cells(store, bench.id, baseline_sha=baseline.sha256)}
    cells = []
    for method, ratio, seed in itertools.product(opts.methods, opts.ratios, opts.seeds):
        config = cell_config(baseline, method, ratio, seed, opts.cell_settings(settings, method))
        key = config_key(config)
        cell = have.get(key)
        if cell is None and opts.skip_existing and (cell := _reusable_cell(store, key)) is not None:
            store.add_edge(bench.id, cell.id, "cell-of")
            log(f"cell {method} r{ratio:g} s{seed}: reusing completed cell {cell.id}")
        if cell is None:
            cell, _ = store.create_run_once(kind="cell", config=config, config_key=key, status="pending",
                                            parents=[(bench.id, "cell-of")], name=f"{method} r{ratio:g} s{seed}")
        cells.append(cell)
    return cells


# ----------------------------------------------------------------------------------------------
# the verb


def bench_run(opts: BenchOptions, store: Store, *, join: str | None = None, prepare_only: bool = False,
              continue_out_dir: bool = False) -> BenchOutcome:
    """Run (or continue, or with `join` take cells of) a grid; returns the summary once every cell is
    completed or failed. With `prepare_only`, records the grid, its baseline and its cells and stops.
    `continue_out_dir` (no grid options were given) continues the grid whose summary `--out-dir` holds."""
    joined = None
    if join is None and continue_out_dir and opts.out_dir:
        opts = continued_options(store, opts)
    if join is not None:
        opts, joined = join_options(store, join, device=None if opts.device == "auto" else opts.device,
                                    worker_grace=opts.worker_grace)
    device = resolve_device(opts.device)
    opts = validate(opts, device)
    source = baseline_source(opts, store)
    settings = opts.settings(device.type if joined is None else joined.config["eval"]["device"])
    config, key = bench_identity(opts, source, settings)
    if joined is not None and key != joined.config_key:
        raise ConfigError(f"bench {joined.id}'s recorded options no longer give its configuration (its baseline "
                          "file changed?): continue it with its own command line")
    if opts.out_dir:  # before the baseline is reused or trained: nothing happens for a refused folder
        check_out_dir(store, Path(opts.out_dir), key, force_new=opts.force_new)
    preflight_data(store, opts, source)
    if joined is None:
        check_cells(opts, source, store, device)
        explain_baseline(store, source)
    bench, out_dir = open_bench(store, opts, config, key, device)
    with Heartbeat(store, interval_s=min(30.0, opts.worker_grace / 4)) as beat:
        baseline = ensure_baseline(store, bench, source, opts, out_dir, beat)
        cells = ensure_cells(store, bench, opts, baseline, settings)
        skipped, retry = starting_point(store, cells, opts.skip_existing)
        if joined is not None:
            retry = {}  # failed cells are retried by the grid's own command, not by joining workers
        if prepare_only:
            summary = write_summary(store, bench, out_dir, skipped, baseline.sha256)
            return _outcome(bench, out_dir, summary, [], skipped, prepared_only=True)
        if store.get_run(bench.id).status != "running":
            store.set_status(bench.id, "running")
        if skipped:
            log(f"{len(skipped)} of {len(cells)} cells are already done and are reused")
        work = CellWork(store=store, opts=opts, baseline=baseline, out_dir=out_dir, beat=beat, bench_id=bench.id)
        ran = _work(work, bench, cells, retry, skipped)
    store.set_status(bench.id, "completed")
    summary = write_summary(store, bench, out_dir, skipped, baseline.sha256)
    stats = summary_stats(summary.rows)
    log(f"bench run {bench.id}: {stats['completed']}/{stats['total_experiments']} cells completed "
        f"({stats['skipped']} reused), {stats['failed']} failed -> {summary.path}")
    return _outcome(bench, out_dir, summary, ran, skipped)


def _work(work: CellWork, bench: Run, cells: Sequence[Run], retry: dict[str, int], skipped: list[str]) -> list[str]:
    def save() -> Summary:
        return write_summary(work.store, bench, work.out_dir, skipped, work.baseline.sha256)

    try:
        return work_through(work, cells, retry, on_done=save)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (`errors.Interrupted`)
        work.store.set_status(bench.id, "interrupted", error=f"interrupted by {getattr(exc, 'signal_name', 'the user')}")
        save()
        raise


def _outcome(bench: Run, out_dir: Path, summary: Summary, ran: list[str], skipped: list[str], *,
             prepared_only: bool = False) -> BenchOutcome:
    return BenchOutcome(run_id=bench.id, out_dir=out_dir, summary_path=summary.path, summary=summary.content,
                        rows=summary.rows, ran=ran, skipped=skipped, prepared_only=prepared_only)
