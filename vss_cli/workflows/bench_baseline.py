"""The baseline of a `vss bench` grid: a given checkpoint, or the dataset's default baseline, reused
from the store when a completed train run has the same config key, else trained once (the process
that claims the bench row trains it; the others wait)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from vss_cli.engine.progress import log
from vss_cli.errors import ConfigError
from vss_cli.store import Run, Store, artifact_intact
from vss_cli.store.queue import Heartbeat, StepStore, is_live, poll_s, take
from vss_cli.workflows.bench_options import BenchOptions
from vss_cli.workflows.common import recorded
from vss_cli.workflows.paths import resolve_checkpoint
from vss_cli.workflows.train import TrainOptions, config_and_key, inherit_dataset, resolve_options, train_run


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


def baseline_source(opts: BenchOptions, store: Store) -> BaselineSource:
    """The given baseline checkpoint, or the train options (and key) of the default baseline."""
    from vss_cli.store import file_sha256

    if opts.baseline:
        ref = resolve_checkpoint(store, opts.baseline, option="--baseline")
        return BaselineSource(checkpoint=Baseline(Path(ref.path).resolve(), file_sha256(ref.path), ref.run_id))
    train = opts.baseline_train
    resolved = resolve_options(inherit_dataset(train, store))
    return BaselineSource(train=train, train_key=config_and_key(resolved, "train")[1])


def explain_baseline(store: Store, source: BaselineSource) -> None:
    """Say which baseline the grid reuses, or why it trains a new one (the nearest config that differs)."""
    if source.checkpoint is not None:
        log(f"baseline: the given checkpoint {source.checkpoint.path}")
        return
    done = store.find_completed(config_key=source.train_key, kind="train")
    if done is not None:
        log(f"baseline: reusing completed train run {done.id} (same training config)")
        return
    config = resolve_options(inherit_dataset(source.train, store))
    wanted = config_and_key(config, "train")[0]
    others = [r for r in store.list_runs(kind="train", status="completed") if r.config.get("dataset") == wanted["dataset"]]
    if not others:
        log(f"baseline: no completed {wanted['dataset']} train run in the store; training one")
        return
    nearest = min(others, key=lambda r: len(_differences(r.config, wanted)))
    diff = ", ".join(f"{k} {nearest.config.get(k)!r} -> {wanted.get(k)!r}" for k in _differences(nearest.config, wanted))
    log(f"baseline: training a new one; the nearest stored baseline, run {nearest.id}, differs in {diff}")


def _differences(have: dict, want: dict) -> list[str]:
    return sorted(k for k in set(have) | set(want) if k != "world_size" and have.get(k) != want.get(k))


def baseline_of_run(store: Store, run: Run) -> Baseline | None:
    """The run's newest checkpoint artifact, if it is still intact."""
    checkpoints = store.artifacts(run.id, "checkpoint")
    if run.status != "completed" or not checkpoints or not artifact_intact(checkpoints[-1]):
        return None
    return Baseline(Path(checkpoints[-1].path), checkpoints[-1].sha256, run.id)


def linked_baseline(store: Store, bench_id: str) -> Baseline | None:
    linked = [run for relation, run in store.parents(bench_id) if relation == "baseline-of"]
    for run in sorted(linked, key=lambda r: r.id, reverse=True):
        if (found := baseline_of_run(store, run)) is not None:
            return found
    return None


def require_linked_baseline_file(store: Store, bench: Run) -> None:
    """A joining worker needs the baseline file the store records: fail (nothing written) when it is absent."""
    path = bench.config.get("baseline_path")
    if not path:
        linked = [run for relation, run in store.parents(bench.id) if relation == "baseline-of"]
        arts = [a for run in linked for a in store.artifacts(run.id, "checkpoint")]
        path = str(arts[-1].path) if arts else None
    if path and not Path(path).is_file():
        raise ConfigError(f"bench {bench.id}'s baseline {path} is not on this machine: mount the shared artifact "
                          "folder (e.g. NFS) at the same path on every worker")


def _training_elsewhere(store: Store, key: str, grace_s: float) -> Run | None:
    """A live process's running train run of this configuration (another grid may be training it)."""
    return next((r for r in store.list_runs(kind="train", status="running", config_key=key) if is_live(r, grace_s)), None)


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
        found = linked_baseline(store, bench.id)
        if found is not None:
            return found
        done = store.find_completed(config_key=source.train_key, kind="train")
        if done is not None and (found := baseline_of_run(store, done)) is not None:
            store.add_edge(done.id, bench.id, "baseline-of")
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
        time.sleep(poll_s(opts.worker_grace))


def _train_baseline(store: Store, bench_id: str, source: BaselineSource, out_dir: Path, beat: Heartbeat) -> Baseline:
    """Train (or resume training) the baseline while holding the bench row."""
    unfinished = [r for r in store.list_runs(kind="train", config_key=source.train_key)
                  if r.status != "completed" and (Path(r.out_dir or "") / "last.pt").is_file()]
    topts = replace(source.train, save=str(out_dir / "baseline"), resume=bool(unfinished))
    log(f"baseline: {'resuming' if unfinished else 'training'} {source.train.dataset or 'synthetic'} baseline")
    beat.add(bench_id)
    try:
        with recorded(store, bench_id, during="training the baseline", complete=False):
            outcome = train_run(topts, StepStore(store, beat), kind="train")
    finally:
        beat.discard(bench_id)
    store.add_edge(outcome.run_id, bench_id, "baseline-of")
    found = baseline_of_run(store, store.get_run(outcome.run_id))
    if found is None:
        raise RuntimeError(f"baseline run {outcome.run_id} finished without an intact checkpoint")
    return found
