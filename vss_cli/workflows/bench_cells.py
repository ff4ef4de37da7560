"""One `vss bench` cell: prune → fine-tune → eval, each step an ordinary run linked `step-of` from the
cell, reusing the steps an earlier attempt finished; and the loop that claims cells until none is left."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from vss_cli.engine.progress import log, progress_bar
from vss_cli.errors import StoreError, StoreUnavailable
from vss_cli.report.schema import cell_metrics
from vss_cli.signals import stop_requested
from vss_cli.store import Run, Store, artifact_intact
from vss_cli.store.grid import step_runs
from vss_cli.store.queue import Heartbeat, StepStore, poll_s, take
from vss_cli.workflows.bench_baseline import Baseline
from vss_cli.workflows.bench_options import BenchOptions
from vss_cli.workflows.evaluate import eval_run
from vss_cli.workflows.prune import prune_run
from vss_cli.workflows.train import train_run


@dataclass
class CellWork:
    """What running one cell needs."""

    store: Store
    opts: BenchOptions
    baseline: Baseline
    out_dir: Path
    beat: Heartbeat
    bench_id: str | None = None  # set: the cells' states are read in one query over the bench's edges


SUMMARY_EVERY_S = 10.0  # a live summary is rewritten at most this often (and always at the end)


def _current(work: CellWork, cells: Sequence[Run]) -> list[Run]:
    """The cells as the store has them now."""
    if work.bench_id is None:
        return [work.store.get_run(c.id) for c in cells]
    now = {run.id: run for relation, run in work.store.children(work.bench_id) if relation == "cell-of"}
    return [now.get(c.id) or work.store.get_run(c.id) for c in cells]


def _intact(store: Store, run: Run | None) -> bool:
    return run is not None and run.status == "completed" and all(artifact_intact(a) for a in store.artifacts(run.id))


def finetune_epochs_after(store: Store, grid_epochs: int, pruned: Run | None) -> int:
    """The cell's fine-tuning epochs: the grid's, less those the method trained itself while pruning
    (`extra_epochs` of the prune run), so every method gets the same training after the baseline."""
    extra = store.latest_metrics(pruned.id).get("extra_epochs", 0.0) if pruned is not None else 0.0
    return max(0, int(grid_epochs or 0) - int(extra))


def cell_intact(store: Store, cell: Run) -> bool:
    """Completed, and each of its steps completed with every artifact at its recorded sha256."""
    steps = step_runs(store, cell.id)
    tuned = finetune_epochs_after(store, cell.config["finetune"]["epochs"], steps.get("prune")) > 0
    needed = ("prune", "finetune", "eval") if tuned else ("prune", "eval")
    return cell.status == "completed" and all(_intact(store, steps.get(kind)) for kind in needed)


def cell_dir(out_dir: Path, cell: Run) -> Path:
    return out_dir / "cells" / f"{cell.config['method']}-r{cell.config['ratio']:g}-s{cell.config['seed']}"


def _abandon_leftovers(store: Store, cell_id: str) -> None:
    """Steps a lost worker left unfinished are marked interrupted (an unfinished fine-tune is resumed)."""
    for relation, run in store.children(cell_id):
        if relation == "step-of" and not run.is_terminal:
            store.set_status(run.id, "interrupted", error="its worker stopped; the cell was taken over")


def _prune_step(work: CellWork, cell: Run, steps: StepStore, prior: Run | None) -> Run:
    if _intact(work.store, prior):
        return prior
    c = cell.config
    popts = work.opts.cell_prune(c["method"], c["ratio"], c["seed"], ckpt=work.baseline.ref,
                                 save=str(cell_dir(work.out_dir, cell) / "prune"))
    return work.store.get_run(prune_run(popts, steps).run_id)


def _finetune_step(work: CellWork, cell: Run, steps: StepStore, pruned: Run, prior: Run | None) -> Run | None:
    epochs = finetune_epochs_after(work.store, work.opts.finetune_epochs, pruned)
    if epochs == 0:
        return None
    same_parent = prior is not None and prior.config.get("model_from") == pruned.id
    if same_parent and _intact(work.store, prior):
        return prior
    resume = same_parent and prior.status != "completed" and (Path(prior.out_dir or "") / "last.pt").is_file()
    topts = replace(work.opts.cell_finetune(cell.config["seed"], model_from=pruned.id, resume=resume,
                                            save=str(cell_dir(work.out_dir, cell) / "finetune")), epochs=epochs)
    if work.opts.nproc_per_cell > 1:
        from vss_cli.workflows.bench_ddp import finetune_under_torchrun

        run_id = finetune_under_torchrun(topts, db_url=work.store.engine.url.render_as_string(hide_password=False),
                                         cell_id=cell.id, nproc=work.opts.nproc_per_cell,
                                         job_dir=cell_dir(work.out_dir, cell) / "ddp")
        return work.store.get_run(run_id)
    return work.store.get_run(train_run(topts, steps, kind="finetune").run_id)


def _eval_step(work: CellWork, cell: Run, steps: StepStore, candidate: Run, prior: Run | None) -> Run:
    if _intact(work.store, prior) and any(p.id == candidate.id for _, p in work.store.parents(prior.id)):
        return prior
    eopts = work.opts.cell_eval(baseline=work.baseline.ref, candidate=candidate.id,
                                out_dir=str(cell_dir(work.out_dir, cell) / "eval"))
    return work.store.get_run(eval_run(eopts, steps).run_id)


def _predict_step(work: CellWork, cell: Run, steps: StepStore, candidate: Run) -> None:
    """`--predict N`: N panels of the baseline against the cell's final model (a predict run under the cell)."""
    if work.opts.predict <= 0:
        return
    from vss_cli.workflows.predict import predict_panels

    predict_panels(work.baseline.ref, candidate.id, work.opts.predict, cell_dir(work.out_dir, cell) / "predict", steps,
                   input_size=work.opts.eval.input_size, device=work.opts.device)


def _finish(store: Store, cell: Run, status: str, metrics: dict | None = None, error: str | None = None) -> None:
    """End the cell unless another worker took it over while this one ran it (then that one ends it)."""
    if not store.finish_claimed(cell.id, status, attempt=cell.attempt, metrics=metrics, error=error):
        log(f"cell {cell.name}: taken over by another worker meanwhile; leaving it to that one")


def run_cell(work: CellWork, cell: Run) -> None:
    """Prune → fine-tune → eval, reusing the steps an earlier attempt finished; the cell ends completed
    (with its headline metrics) or failed (with the error), unless another worker took it over meanwhile
    (then its result is left to that worker: a cell is completed once). Ctrl-C marks it interrupted."""
    store, t0 = work.store, time.perf_counter()
    steps = StepStore(store, work.beat, parents=[(cell.id, "step-of")])
    work.beat.add(cell.id)
    try:
        store.update_run(cell.id, out_dir=cell_dir(work.out_dir, cell))
        _abandon_leftovers(store, cell.id)
        prior = step_runs(store, cell.id)
        pruned = _prune_step(work, cell, steps, prior.get("prune"))
        tuned = _finetune_step(work, cell, steps, pruned, prior.get("finetune"))
        evaluated = _eval_step(work, cell, steps, tuned or pruned, prior.get("eval"))
        _predict_step(work, cell, steps, tuned or pruned)
        metrics = cell_metrics({
            **store.latest_metrics(pruned.id), **store.latest_metrics(evaluated.id),
            "finetune_epochs": float(finetune_epochs_after(store, work.opts.finetune_epochs, pruned))})
        _finish(store, cell, "completed", {**metrics, "cell_seconds": time.perf_counter() - t0})
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (`errors.Interrupted`)
        _finish(store, cell, "interrupted", error=f"interrupted by {getattr(exc, 'signal_name', 'the user')}")
        raise
    except StoreUnavailable:  # the database is gone: this worker stops, the cell stays resumable
        with contextlib.suppress(StoreError):
            _finish(store, cell, "interrupted", error="database unreachable")
        raise
    except Exception as exc:  # noqa: BLE001 - one failing cell must not stop the grid
        stop = stop_requested()  # ... unless a stop signal caused it: then the cell is interrupted
        if stop is not None:
            _finish(store, cell, "interrupted", error=f"interrupted by {getattr(stop, 'signal_name', 'the user')}")
            raise stop from exc
        log(f"cell {cell.name} failed: {type(exc).__name__}: {exc}")
        _finish(store, cell, "failed", error=f"{type(exc).__name__}: {exc}")
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
    saved = time.monotonic()
    with progress_bar("bench cells", total=len(cells)) as update:
        shown = 0
        while True:
            current = _current(work, cells)
            settled = sum(_settled(r, retry) for r in current)
            update(advance=settled - shown)
            shown = settled
            todo = [r for r in current if not _settled(r, retry)]
            if not todo:
                return ran
            if (stop := stop_requested()) is not None:  # after a stop signal, no new cell
                raise stop
            cell = next((r for r in todo if take(store, r, grace, retry=r.id in retry)), None)
            if cell is None:
                time.sleep(poll_s(grace))  # the rest are running in other processes
                continue
            if cell.status == "running" or cell.attempt > 0:
                log(f"cell {cell.name}: attempt {cell.attempt + 1} (was {cell.status}, worker {cell.worker})")
            if cell.status == "running":  # its worker died or stopped heartbeating: keep a trace of that attempt
                store.add_metrics(cell.id, {"lost_attempt": cell.attempt}, step=cell.attempt)
            update(advance=0, info=cell.name or "")
            run_cell(work, store.get_run(cell.id))
            ran.append(cell.id)
            if time.monotonic() - saved >= SUMMARY_EVERY_S:
                on_done()
                saved = time.monotonic()
