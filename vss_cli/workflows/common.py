"""Pieces every workflow shares: device choice, run folders, artifact writes that never overwrite
another run's file, and run recording (signals, heartbeat). Checkpoint references: workflows.paths."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

import vss_cli
from vss_cli.engine.progress import log
from vss_cli.errors import ConfigError, Interrupted, RunTakenOver, StoreError, StoreUnavailable
from vss_cli.signals import stop_requested
from vss_cli.store.queue import Heartbeat


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks CUDA when available; an unavailable CUDA request is bad input."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for CUDA but none is available: use --device cpu")
    return dev


def versions(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "vss": vss_cli.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": f"{device} ({name})",
    }


def check_model_name(expected: str | None, loaded_name: str, path) -> None:
    """`--model` on prune/eval (the seed's command lines pass it) must name the checkpoint's model."""
    if expected and expected != loaded_name:
        raise ConfigError(f"--model {expected} does not match {path}, which holds a {loaded_name}: "
                          "drop --model or pass the matching checkpoint")


def default_out_dir(kind: str, run_id: str, save: Path | str | None) -> Path:
    """A run's own folder: `runs/<kind>/<run id>`, or `<save>/<run id>`. A shared `--save` folder
    therefore holds one subfolder per run, and no run writes into another's."""
    return (Path(save) if save else Path("runs") / kind) / run_id


def check_writable(store, run_id: str | None, path: Path | str | None) -> Path | None:
    """Refuse (exit 2) to write `path` when a run other than `run_id` recorded it as an artifact.

    Every artifact write goes through this (`save_artifact` calls it); workflows also call it on
    user-given paths before the run row exists (`run_id=None`; a None path is not checked)."""
    if path is None:
        return None
    path = Path(path)
    owner = store.run_for_artifact(path)
    if owner is not None and owner.id != run_id:
        raise ConfigError(f"{path.resolve()} belongs to run {owner.id} ({owner.kind}) and vss never overwrites "
                          "another run's file: pass a new path or folder")
    return path


def save_artifact(store, run_id: str, kind: str, path: Path | str, write: Callable[[Path], object]) -> Path:
    """Check `path` is this run's to write, write it (atomically: `write` uses `vss_cli.fileio`), and
    record it as the run's artifact of `kind`."""
    path = check_writable(store, run_id, path)
    write(path)
    store.add_artifact(run_id, kind=kind, path=path)
    return path


def infer_dataset(dataset: str | None, data_root: str | Path | None) -> str | None:
    """`--data-root` without `--dataset`: the dataset its layout shows (as `vss data check` infers it),
    else DataError naming both layouts. Without either option: None (the caller's default)."""
    if dataset or not data_root:
        return dataset
    from vss_cli.data.detect import infer_dataset as from_layout

    name = from_layout(data_root)
    log(f"--dataset {name} (inferred from the layout of {data_root})")
    return name


def _signal_name(stop: KeyboardInterrupt) -> str:
    return getattr(stop, "signal_name", "the user")


HEARTBEAT_S = 30.0  # how often `recorded` heartbeats its run (store.queue.Heartbeat)


@contextlib.contextmanager
def recorded(store, run_id: str, *, during: str | None = None, complete: bool = True,
             heartbeat_s: float | None = HEARTBEAT_S) -> Iterator[None]:
    """Heartbeat the run while the block runs; mark it interrupted on Ctrl-C, SIGTERM or SIGHUP
    (`errors.Interrupted`), failed (with the error) on any other exception, and completed on success
    unless `complete` is False (a run that goes on after this step). `during` names the step in the
    recorded error."""
    where = f" while {during}" if during else ""
    beat = Heartbeat(store, heartbeat_s, (run_id,)) if heartbeat_s else contextlib.nullcontext()
    try:
        with beat:
            yield
    except RunTakenOver:
        raise  # the run is another worker's now: its status is not this process's to set
    except StoreUnavailable:  # after the retry window: one quick try to leave the run resumable
        with contextlib.suppress(StoreError):
            store.set_status(run_id, "interrupted", error=f"database unreachable{where}")
        raise
    except Interrupted as exc:
        store.set_status(run_id, "interrupted", error=f"interrupted by {exc.signal_name}{where}")
        raise
    except KeyboardInterrupt:
        store.set_status(run_id, "interrupted", error=f"interrupted{where or ' by the user'}")
        raise
    except BaseException as exc:
        stop = stop_requested()  # a failure a stop signal caused (raised inside a C++ callback, say)
        if stop is not None:
            store.set_status(run_id, "interrupted", error=f"interrupted by {_signal_name(stop)}{where}")
            raise stop from exc
        store.set_status(run_id, "failed", error=f"{type(exc).__name__}{where}: {exc}")
        raise
    else:
        if complete:
            store.set_status(run_id, "completed")
