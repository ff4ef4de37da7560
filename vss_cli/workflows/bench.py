"""`vss bench`: a method × ratio × seed grid of prune → fine-tune → eval cells over one baseline.

Identity. The grid is a `bench` run keyed by its configuration (the baseline checkpoint's sha256, or
the config key of the baseline it trains, plus the axes and every step setting); each cell is a
`cell` run keyed by the baseline sha, method, ratio, seed and the step settings, linked `cell-of`
under the bench. Both are created once (`Store.create_run_once`), so running the same grid again, or
from several processes at once, works on the same rows. Every step is an ordinary prune / finetune /
eval run linked `step-of` from its cell in the transaction that creates it.

Sharing and resuming. A process claims one cell at a time with the store's check-and-set
(`claim_run`) and heartbeats it from a background thread. A running cell whose heartbeat is older
than `worker_grace`, or whose worker process on this host is gone (SIGKILL), is taken over; inside
it, steps that completed with intact artifacts are reused and an unfinished fine-tune continues from
its `last.pt`. Completed cells of the same grid are never rerun; failed ones are retried by the next
invocation. A process leaves only when every cell is completed or failed, so the last one out writes
the complete summary. Without `--baseline`, the baseline is looked up by its train config key and
trained at most once: the process that claims the bench row trains it, the others wait.

`--skip-existing` (DESIGN §3) makes reuse exact: a completed cell counts only if its step artifacts
still exist with the recorded sha256 (otherwise it is rerun), and completed cells of *other* grids
with the same cell key are linked into this one instead of being run again.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from vss_cli.engine.progress import log, progress_bar
from vss_cli.errors import ConfigError, RunNotFound
from vss_cli.fileio import write_json
from vss_cli.report.tables import (
    CellRow,
    baseline_point,
    cell_rows,
    grid_cells,
    step_runs,
    summary_stats,
)
from vss_cli.store import Run, Store, artifact_intact, config_key
from vss_cli.workflows.common import recorded, resolve_checkpoint, resolve_device, versions
from vss_cli.workflows.evaluate import EvalOptions, eval_run
from vss_cli.workflows.prune import PruneOptions, prune_run
from vss_cli.workflows.train import TrainOptions, config_and_key, inherit_dataset, resolve_options, train_run

SUMMARY_NAME = "benchmark_summary.json"
DEFAULT_METHODS = ("fpgm", "sirfp")
DEFAULT_RATIOS = (0.2, 0.3, 0.5)
CELL_METRIC_SOURCES = {  # cell metric <- eval metric
    "miou": "candidate_miou",
    "miou_retention": "miou_retention",
    "speedup_latency": "speedup_latency",
    "channel_reduction": "channel_prune_ratio",
    "macs_reduction": "macs_reduction",
    "params_reduction": "params_reduction",
    "baseline_miou": "baseline_miou",
    "baseline_latency_ms": "baseline_latency_ms",
    "candidate_latency_ms": "candidate_latency_ms",
    "baseline_macs": "baseline_macs",
    "candidate_macs": "candidate_macs",
    "baseline_params": "baseline_params",
    "candidate_params": "candidate_params",
}


@dataclass
class BenchOptions:
    """A grid and the recipe every cell follows (`None`: the dataset's / the step's default)."""

    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    ratios: list[float] = field(default_factory=lambda: list(DEFAULT_RATIOS))
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: str | None = None  # checkpoint or run; None: reuse or train the dataset's default baseline
    finetune_epochs: int = 5  # 0: evaluate the pruned model as it is
    finetune_lr: float | None = None
    max_iters_per_epoch: int | None = None  # caps baseline training and fine-tuning (smoke runs)
    baseline_epochs: int | None = None
    dataset: str | None = None
    data_root: str | None = None
    model: str | None = None
    width: float | None = None
    input_size: tuple[int, int] | None = None
    batch_size: int = 4  # evaluation and timing
    round_to: int = 8
    samples: int = 64
    oracle_samples: int = 0
    speed_iters: int = 50
    warmup: int = 10
    dtype: str = "fp32"
    device: str = "auto"
    out_dir: str | None = None
    skip_existing: bool = False
    worker_grace: float = 300.0


@dataclass
class Baseline:
    """The checkpoint every cell is pruned from and compared with."""

    path: Path
    sha256: str
    run_id: str | None = None

    @property
    def ref(self) -> str:
        """What the steps are given: the run id when there is one (so lineage edges appear), else the path."""
        return self.run_id or str(self.path)


@dataclass
class BaselineSource:
    """Either a given checkpoint or the options of the baseline to reuse or train, known before any write."""

    checkpoint: Baseline | None = None
    train: TrainOptions | None = None
    train_key: str | None = None

    def identity(self) -> dict:
        if self.checkpoint is not None:
            return {"checkpoint_sha256": self.checkpoint.sha256}
        return {"train_config_key": self.train_key}


@dataclass
class BenchOutcome:
    run_id: str
    out_dir: Path
    summary_path: Path
    summary: dict
    rows: list[CellRow]
    ran: list[str]
    skipped: list[str]

    @property
    def stats(self) -> dict:
        """This grid's counts (the summary file's `summary_stats` also count rows other grids wrote there)."""
        return summary_stats(self.rows)


# ----------------------------------------------------------------------------------------------
# options


def _unique(values: Iterable) -> list:
    return list(dict.fromkeys(values))


def validate(opts: BenchOptions, device) -> BenchOptions:
    """Check every option before anything is written; returns the options with duplicate axis values dropped."""
    from vss_cli.engine.speed import check_dtype
    from vss_cli.pruning.base import method_class
    from vss_cli.workflows.evaluate import validate as validate_eval

    opts = replace(opts, methods=_unique(m.strip() for m in opts.methods if m.strip()),
                   ratios=_unique(float(r) for r in opts.ratios), seeds=_unique(int(s) for s in opts.seeds))
    for axis, example in (("methods", "fpgm,sirfp"), ("ratios", "0.2,0.3,0.5"), ("seeds", "0,1,2")):
        if not getattr(opts, axis):
            raise ConfigError(f"--{axis} is empty: pass a comma-separated list such as {example}")
    classes = [method_class(m) for m in opts.methods]
    checks = [
        *((0.0 < r < 1.0, f"--ratios {r:g} is outside (0, 1): pass fractions such as 0.2,0.3,0.5") for r in opts.ratios),
        *((s >= 0, f"--seeds {s} is negative: pass seeds such as 0,1,2") for s in opts.seeds),
        (opts.finetune_epochs >= 0, f"--finetune-epochs {opts.finetune_epochs} is negative: pass 0 (no fine-tuning) or more"),
        (opts.finetune_lr is None or opts.finetune_lr > 0, f"--finetune-lr {opts.finetune_lr} must be positive"),
        (opts.baseline_epochs is None or opts.baseline_epochs >= 1,
         f"--baseline-epochs {opts.baseline_epochs} must be at least 1"),
        (opts.max_iters_per_epoch is None or opts.max_iters_per_epoch >= 1,
         f"--max-iters-per-epoch {opts.max_iters_per_epoch} must be at least 1"),
        (opts.round_to >= 1, f"--round-to {opts.round_to} must be 1 or more"),
        (opts.samples >= 0, f"--samples {opts.samples} must be 0 or more"),
        (opts.worker_grace > 0, f"--worker-grace {opts.worker_grace} must be a positive number of seconds"),
        *((opts.samples > 0 or not cls.needs_data,
           f"method '{cls.name}' scores channels on data: pass --samples N with N > 0") for cls in classes),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    validate_eval(_eval_options(opts, baseline="", candidate="", out_dir=None))
    check_dtype(opts.dtype, device)
    if opts.dataset:
        from vss_cli.data import build_dataset

        build_dataset(opts.dataset, "train", data_root=opts.data_root)  # a missing or empty root fails here
    return opts


def step_settings(opts: BenchOptions, device) -> dict:
    """Everything besides the baseline and the axes that changes a cell's result."""
    return {
        "dataset": opts.dataset,
        "input_size": list(opts.input_size) if opts.input_size else None,
        "prune": {"round_to": opts.round_to, "samples": opts.samples},
        "finetune": {"epochs": opts.finetune_epochs, "lr": opts.finetune_lr,
                     "max_iters_per_epoch": opts.max_iters_per_epoch},
        "eval": {"batch_size": opts.batch_size, "dtype": opts.dtype, "oracle_samples": opts.oracle_samples,
                 "speed_iters": opts.speed_iters, "warmup": opts.warmup, "device": device.type},
    }


def _eval_options(opts: BenchOptions, *, baseline: str, candidate: str, out_dir: str | None) -> EvalOptions:
    return EvalOptions(
        baseline=baseline, candidate=candidate, batch_size=opts.batch_size, input_size=opts.input_size,
        dataset=opts.dataset, data_root=opts.data_root, device=opts.device, dtype=opts.dtype,
        speed_iters=opts.speed_iters, warmup=opts.warmup, oracle_samples=opts.oracle_samples, out_dir=out_dir,
    )


def baseline_source(opts: BenchOptions, store: Store) -> BaselineSource:
    """The given baseline checkpoint, or the train options (and key) of the default baseline."""
    from vss_cli.store import file_sha256

    if opts.baseline:
        ref = resolve_checkpoint(store, opts.baseline, option="--baseline")
        return BaselineSource(checkpoint=Baseline(Path(ref.path), file_sha256(ref.path), ref.run_id))
    train = TrainOptions(
        dataset=opts.dataset or "synthetic", data_root=opts.data_root, model=opts.model,
        model_kwargs={"width": opts.width} if opts.width is not None else {}, epochs=opts.baseline_epochs,
        input_size=opts.input_size, device=opts.device, max_iters_per_epoch=opts.max_iters_per_epoch,
    )
    resolved = resolve_options(inherit_dataset(train, store))
    return BaselineSource(train=train, train_key=config_and_key(resolved, "train")[1])


# ----------------------------------------------------------------------------------------------
# workers: heartbeats, liveness, claims


class Heartbeat:
    """A daemon thread heartbeating the runs this process works on, so however long an epoch or a
    timing run takes, only a dead (or hung) worker's runs go stale."""

    def __init__(self, store: Store, interval_s: float) -> None:
        self.store, self.interval_s = store, interval_s
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vss-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def add(self, run_id: str) -> None:
        with self._lock:
            self._ids.add(run_id)

    def discard(self, *run_ids: str) -> None:
        with self._lock:
            self._ids.difference_update(run_ids)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                ids = list(self._ids)
            for run_id in ids:
                try:
                    self.store.heartbeat(run_id)
                except Exception:  # noqa: BLE001 - a missed beat only makes the run look older
                    pass


class StepStore:
    """The store as a step workflow sees it: each run it creates gets the extra parent edges (the cell,
    `step-of`) in the same transaction, and every run it creates or claims is heartbeaten."""

    def __init__(self, store: Store, beat: Heartbeat, parents: Sequence[tuple[str, str]] = ()) -> None:
        self._store, self._beat, self._parents = store, beat, list(parents)
        self.touched: list[str] = []

    def create_run(self, **kwargs) -> Run:
        kwargs["parents"] = [*kwargs.get("parents", ()), *self._parents]
        run = self._store.create_run(**kwargs)
        self._track(run.id)
        return run

    def claim_run(self, run_id: str, **kwargs) -> bool:
        claimed = self._store.claim_run(run_id, **kwargs)
        if claimed:
            self._track(run_id)
        return claimed

    def _track(self, run_id: str) -> None:
        self.touched.append(run_id)
        self._beat.add(run_id)

    def __getattr__(self, name: str):
        return getattr(self._store, name)


def worker_is_dead(worker: str | None) -> bool:
    """True when `worker` (`host:pid`, as the store records it) ran on this host and that process is gone."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _stale(run: Run, grace_s: float) -> bool:
    beat = run.heartbeat_at
    return beat is None or beat < datetime.now(timezone.utc) - timedelta(seconds=grace_s)


def take(store: Store, run: Run, grace_s: float, *, retry: bool = False) -> bool:
    """Claim `run` if nobody live holds it: pending, interrupted, stale, or its worker's process is gone;
    with `retry`, also a failed or completed run, provided nobody took it since it was looked at."""
    if run.status in ("pending", "interrupted"):
        return store.claim_run(run.id, stale_after_s=grace_s)
    if run.status == "running":
        if worker_is_dead(run.worker):
            return store.claim_run(run.id, stale_after_s=grace_s, also=("running",), if_attempt=run.attempt)
        return _stale(run, grace_s) and store.claim_run(run.id, stale_after_s=grace_s)
    if retry:
        return store.claim_run(run.id, stale_after_s=grace_s, also=(run.status,), if_attempt=run.attempt)
    return False


def _poll_s(grace_s: float) -> float:
    return max(0.2, min(2.0, grace_s / 10))


# ----------------------------------------------------------------------------------------------
# the bench row and the baseline


def _axes_name(opts: BenchOptions) -> str:
    return (f"{','.join(opts.methods)} r{','.join(f'{r:g}' for r in opts.ratios)} "
            f"s{','.join(map(str, opts.seeds))}")


def open_bench(store: Store, opts: BenchOptions, source: BaselineSource, settings: dict, device) -> tuple[Run, Path]:
    """The bench run of this grid (created once) and its output folder."""
    grid = {"methods": opts.methods, "ratios": opts.ratios, "seeds": opts.seeds}
    config = {"kind": "bench", "baseline": source.identity(), "grid": grid, **settings}
    # the key ignores the order the axes were typed in: fpgm,l1 and l1,fpgm are one grid
    canonical = {**config, "grid": {axis: sorted(values) for axis, values in grid.items()}}
    run, created = store.create_run_once(kind="bench", config=config, config_key=config_key(canonical),
                                         status="pending", name=_axes_name(opts), versions=versions(device))
    out_dir = Path(opts.out_dir or run.out_dir or Path("runs") / "bench" / run.id).resolve()
    if created or opts.out_dir:
        run = store.update_run(run.id, out_dir=out_dir)
    log(f"bench run {run.id} ({'new' if created else 'continuing'}) -> {out_dir}")
    return run, out_dir


def _baseline_of_run(store: Store, run: Run) -> Baseline | None:
    """The run's newest checkpoint artifact, if it is still intact."""
    checkpoints = store.artifacts(run.id, "checkpoint")
    if run.status != "completed" or not checkpoints or not artifact_intact(checkpoints[-1]):
        return None
    return Baseline(checkpoints[-1].path, checkpoints[-1].sha256, run.id)


def _linked_baseline(store: Store, bench_id: str) -> Baseline | None:
    linked = [run for relation, run in store.parents(bench_id) if relation == "baseline-of"]
    for run in sorted(linked, key=lambda r: r.id, reverse=True):
        if (found := _baseline_of_run(store, run)) is not None:
            return found
    return None


def _training_elsewhere(store: Store, key: str, grace_s: float) -> Run | None:
    """A live process's running train run of this configuration (another grid may be training it)."""
    for run in store.list_runs(kind="train", status="running", config_key=key):
        if not _stale(run, grace_s) and not worker_is_dead(run.worker):
            return run
    return None


def ensure_baseline(store: Store, bench: Run, source: BaselineSource, opts: BenchOptions, out_dir: Path,
                    beat: Heartbeat) -> Baseline:
    """The grid's baseline: the given one, the one linked earlier, a completed train run of the same
    config, or one this process trains after claiming the bench row (other processes wait)."""
    if source.checkpoint is not None:
        if source.checkpoint.run_id:
            store.add_edge(source.checkpoint.run_id, bench.id, "baseline-of")
        return source.checkpoint
    failed_before = bench.attempt if bench.status == "failed" else None
    said = False
    while True:
        found = _linked_baseline(store, bench.id)
        if found is not None:
            return found
        done = store.find_completed(config_key=source.train_key, kind="train")
        if done is not None and (found := _baseline_of_run(store, done)) is not None:
            store.add_edge(done.id, bench.id, "baseline-of")
            log(f"baseline: reusing train run {done.id}")
            return found
        row = store.get_run(bench.id)
        retry = row.status == "completed" or (row.status == "failed" and row.attempt == failed_before)
        if _training_elsewhere(store, source.train_key, opts.worker_grace) is None and \
                take(store, row, opts.worker_grace, retry=retry):
            return _train_baseline(store, bench.id, source, out_dir, beat)
        if row.status == "failed" and not retry:
            raise RuntimeError(f"the baseline of bench {bench.id} could not be trained ({row.error}): "
                               "fix the cause and run the command again")
        if not said:
            log("baseline: another process is training it; waiting")
            said = True
        time.sleep(_poll_s(opts.worker_grace))


def _train_baseline(store: Store, bench_id: str, source: BaselineSource, out_dir: Path, beat: Heartbeat) -> Baseline:
    """Train (or resume training) the baseline while holding the bench row."""
    unfinished = [r for r in store.list_runs(kind="train", config_key=source.train_key)
                  if r.status != "completed" and (Path(r.out_dir or "") / "last.pt").is_file()]
    topts = replace(source.train, save=str(out_dir / "baseline"), resume=bool(unfinished))
    log(f"baseline: {'resuming' if unfinished else 'training'} {source.train.dataset} baseline")
    beat.add(bench_id)
    try:
        with recorded(store, bench_id, during="training the baseline", complete=False):
            outcome = train_run(topts, StepStore(store, beat), kind="train")
    finally:
        beat.discard(bench_id)
    store.add_edge(outcome.run_id, bench_id, "baseline-of")
    found = _baseline_of_run(store, store.get_run(outcome.run_id))
    if found is None:
        raise RuntimeError(f"baseline run {outcome.run_id} finished without an intact checkpoint")
    return found


# ----------------------------------------------------------------------------------------------
# cells


def cell_config(baseline: Baseline, method: str, ratio: float, seed: int, settings: dict) -> dict:
    return {"kind": "cell", "baseline_sha256": baseline.sha256, "method": method, "ratio": ratio, "seed": seed,
            **settings}


def _intact(store: Store, run: Run | None) -> bool:
    return run is not None and run.status == "completed" and all(artifact_intact(a) for a in store.artifacts(run.id))


def cell_intact(store: Store, cell: Run) -> bool:
    """Completed, and each of its steps completed with every artifact at its recorded sha256."""
    needed = ("prune", "finetune", "eval") if cell.config["finetune"]["epochs"] > 0 else ("prune", "eval")
    steps = step_runs(store, cell.id)
    return cell.status == "completed" and all(_intact(store, steps.get(kind)) for kind in needed)


def _reusable_cell(store: Store, key: str) -> Run | None:
    """A completed cell with this key from any grid whose artifacts are intact (--skip-existing)."""
    return next((c for c in store.list_runs(kind="cell", status="completed", config_key=key)
                 if cell_intact(store, c)), None)


def ensure_cells(store: Store, bench: Run, opts: BenchOptions, baseline: Baseline, settings: dict) -> list[Run]:
    """One cell row per method × ratio × seed under the bench (created once, pending)."""
    have = {cell.config_key: cell for cell in grid_cells(store, bench.id, baseline_sha=baseline.sha256)}
    cells = []
    for method, ratio, seed in itertools.product(opts.methods, opts.ratios, opts.seeds):
        config = cell_config(baseline, method, ratio, seed, settings)
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


@dataclass
class CellWork:
    """What running one cell needs."""

    store: Store
    opts: BenchOptions
    baseline: Baseline
    out_dir: Path
    beat: Heartbeat


def _cell_dir(out_dir: Path, cell: Run) -> Path:
    return out_dir / "cells" / f"{cell.config['method']}-r{cell.config['ratio']:g}-s{cell.config['seed']}"


def _abandon_leftovers(store: Store, cell_id: str) -> None:
    """Steps a lost worker left unfinished are marked interrupted (an unfinished fine-tune is resumed)."""
    for relation, run in store.children(cell_id):
        if relation == "step-of" and not run.is_terminal:
            store.set_status(run.id, "interrupted", error="its worker stopped; the cell was taken over")


def _prune_step(work: CellWork, cell: Run, steps: StepStore, prior: Run | None) -> Run:
    if _intact(work.store, prior):
        return prior
    c, opts = cell.config, work.opts
    out = prune_run(PruneOptions(
        ckpt=work.baseline.ref, method=c["method"], global_ratio=c["ratio"], round_to=opts.round_to,
        input_size=opts.input_size, samples=opts.samples, seed=c["seed"], device=opts.device,
        dataset=opts.dataset, data_root=opts.data_root, save=str(_cell_dir(work.out_dir, cell) / "prune"),
    ), steps)
    return work.store.get_run(out.run_id)


def _finetune_step(work: CellWork, cell: Run, steps: StepStore, pruned: Run, prior: Run | None) -> Run | None:
    opts = work.opts
    if opts.finetune_epochs == 0:
        return None
    same_parent = prior is not None and prior.config.get("model_from") == pruned.id
    if same_parent and _intact(work.store, prior):
        return prior
    resume = same_parent and prior.status != "completed" and (Path(prior.out_dir or "") / "last.pt").is_file()
    outcome = train_run(TrainOptions(
        dataset=opts.dataset, data_root=opts.data_root, epochs=opts.finetune_epochs, lr=opts.finetune_lr,
        input_size=opts.input_size, seed=cell.config["seed"], device=opts.device,
        max_iters_per_epoch=opts.max_iters_per_epoch, model_from=pruned.id,
        save=str(_cell_dir(work.out_dir, cell) / "finetune"), resume=resume,
    ), steps, kind="finetune")
    return work.store.get_run(outcome.run_id)


def _eval_step(work: CellWork, cell: Run, steps: StepStore, candidate: Run, prior: Run | None) -> Run:
    if _intact(work.store, prior) and any(p.id == candidate.id for _, p in work.store.parents(prior.id)):
        return prior
    out_dir = _cell_dir(work.out_dir, cell) / "eval"
    outcome = eval_run(_eval_options(work.opts, baseline=work.baseline.ref, candidate=candidate.id,
                                     out_dir=str(out_dir)), steps)
    return work.store.get_run(outcome.run_id)


def run_cell(work: CellWork, cell: Run) -> None:
    """Prune → fine-tune → eval, reusing the steps an earlier attempt finished; the cell ends completed
    (with its headline metrics) or failed (with the error). Ctrl-C marks it interrupted and stops."""
    store, t0 = work.store, time.perf_counter()
    steps = StepStore(store, work.beat, parents=[(cell.id, "step-of")])
    work.beat.add(cell.id)
    try:
        store.update_run(cell.id, out_dir=_cell_dir(work.out_dir, cell))
        _abandon_leftovers(store, cell.id)
        prior = step_runs(store, cell.id)
        pruned = _prune_step(work, cell, steps, prior.get("prune"))
        tuned = _finetune_step(work, cell, steps, pruned, prior.get("finetune"))
        evaluated = _eval_step(work, cell, steps, tuned or pruned, prior.get("eval"))
        metrics = store.latest_metrics(evaluated.id)
        store.add_metrics(cell.id, {key: metrics.get(src) for key, src in CELL_METRIC_SOURCES.items()})
        store.add_metrics(cell.id, {"cell_seconds": time.perf_counter() - t0})
        store.set_status(cell.id, "completed")
    except KeyboardInterrupt:
        store.set_status(cell.id, "interrupted", error="interrupted by the user")
        raise
    except Exception as exc:  # noqa: BLE001 - one failing cell must not stop the grid
        store.set_status(cell.id, "failed", error=f"{type(exc).__name__}: {exc}")
        log(f"cell {cell.name} failed: {type(exc).__name__}: {exc}")
    finally:
        work.beat.discard(cell.id, *steps.touched)


def _settled(run: Run, retry: dict[str, int]) -> bool:
    """Completed or failed, and not a cell this invocation set out to redo (still at the attempt it saw)."""
    return run.status in ("completed", "failed") and retry.get(run.id) != run.attempt


def starting_point(store: Store, cells: Sequence[Run], skip_existing: bool) -> tuple[list[str], dict[str, int]]:
    """Cells found done (reused, never rerun) and cells to redo (failed, or with --skip-existing completed
    with missing or altered artifacts), each with the attempt seen now."""
    skipped = [c.id for c in cells if c.status == "completed" and (not skip_existing or cell_intact(store, c))]
    retry = {c.id: c.attempt for c in cells if c.status == "failed" or (c.status == "completed" and c.id not in skipped)}
    return skipped, retry


def work_through(work: CellWork, cells: Sequence[Run], retry: dict[str, int], on_done: Callable[[], object]) -> list[str]:
    """Claim and run cells until every one is settled; returns the ids of the cells run here."""
    store, grace = work.store, work.opts.worker_grace
    ran: list[str] = []
    with progress_bar("bench cells", total=len(cells)) as update:
        shown = 0
        while True:
            current = [store.get_run(c.id) for c in cells]
            settled = sum(_settled(r, retry) for r in current)
            update(advance=settled - shown)
            shown = settled
            todo = [r for r in current if not _settled(r, retry)]
            if not todo:
                return ran
            cell = next((r for r in todo if take(store, r, grace, retry=r.id in retry)), None)
            if cell is None:
                time.sleep(_poll_s(grace))  # the rest are running in other processes
                continue
            if cell.status == "running" or cell.attempt > 0:
                log(f"cell {cell.name}: attempt {cell.attempt + 1} (was {cell.status}, worker {cell.worker})")
            update(advance=0, info=cell.name or "")
            run_cell(work, store.get_run(cell.id))
            ran.append(cell.id)
            on_done()


# ----------------------------------------------------------------------------------------------
# the summary file


def _read_rows(path: Path) -> list[dict]:
    import json

    try:
        return list(json.loads(path.read_text()).get("results", []))
    except (OSError, ValueError, AttributeError):
        return []


def _merged_rows(store: Store, rows: list[CellRow], path: Path) -> list[dict]:
    """This grid's rows, then rows an earlier grid wrote to the same file (refreshed from the store)."""
    from vss_cli.report.tables import cell_row

    mine = [r.to_dict() for r in rows]
    keys = {r["config_key"] for r in mine}
    others = []
    for old in _read_rows(path):
        if not isinstance(old, dict) or old.get("config_key") in keys:
            continue
        try:
            fresh = cell_row(store, store.get_run(old["cell_run"]), skipped=bool(old.get("skipped"))).to_dict()
        except (RunNotFound, KeyError, TypeError):
            fresh = old
        keys.add(fresh.get("config_key"))
        others.append(fresh)
    return mine + others


def write_summary(store: Store, bench: Run, out_dir: Path, skipped: Iterable[str],
                  baseline_sha: str) -> tuple[Path, dict, list[CellRow]]:
    """`benchmark_summary.json`: every cell of this grid as the store has it now, merged with the rows
    other grids wrote to the same folder; written to a temporary name and renamed."""
    rows = cell_rows(store, bench.id, skipped=skipped, baseline_sha=baseline_sha)
    path = out_dir / SUMMARY_NAME
    results = _merged_rows(store, rows, path)
    base = baseline_point(store, bench, rows)
    summary = {
        "bench_run": bench.id,
        "baseline": {"run": base.run_id, "miou": base.miou, "latency_ms": base.latency_ms},
        "grid": bench.config["grid"],
        "settings": {k: v for k, v in bench.config.items() if k not in ("kind", "grid", "baseline")},
        "summary_stats": summary_stats(results),
        "results": results,
        "updated_at": datetime.now(timezone.utc).isoformat(),
    }
    write_json(path, summary)
    return path, summary, rows


# ----------------------------------------------------------------------------------------------
# the verb


def bench_run(opts: BenchOptions, store: Store) -> BenchOutcome:
    """Run (or continue, or join) a grid; returns the summary once every cell is completed or failed."""
    device = resolve_device(opts.device)
    opts = validate(opts, device)
    source = baseline_source(opts, store)
    settings = step_settings(opts, device)
    bench, out_dir = open_bench(store, opts, source, settings, device)
    with Heartbeat(store, interval_s=min(30.0, opts.worker_grace / 4)) as beat:
        baseline = ensure_baseline(store, bench, source, opts, out_dir, beat)
        cells = ensure_cells(store, bench, opts, baseline, settings)
        if store.get_run(bench.id).status != "running":
            store.set_status(bench.id, "running")
        work = CellWork(store=store, opts=opts, baseline=baseline, out_dir=out_dir, beat=beat)
        skipped, retry = starting_point(store, cells, opts.skip_existing)
        if skipped:
            log(f"{len(skipped)} of {len(cells)} cells are already done and are reused")

        def save() -> tuple[Path, dict, list[CellRow]]:
            return write_summary(store, bench, out_dir, skipped, baseline.sha256)

        try:
            ran = work_through(work, cells, retry, on_done=save)
        except KeyboardInterrupt:
            store.set_status(bench.id, "interrupted", error="interrupted by the user")
            save()
            raise
    store.set_status(bench.id, "completed")
    path, summary, rows = save()
    stats = summary_stats(rows)
    log(f"bench run {bench.id}: {stats['completed']}/{stats['total_experiments']} cells completed "
        f"({stats['skipped']} reused), {stats['failed']} failed -> {path}")
    return BenchOutcome(run_id=bench.id, out_dir=out_dir, summary_path=path, summary=summary, rows=rows,
                        ran=ran, skipped=skipped)
