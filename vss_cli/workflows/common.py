"""Pieces every workflow shares: device choice, checkpoint references (sha256-verified), run folders,
artifact writes that never overwrite another run's file, and run recording (signals, heartbeat)."""

from __future__ import annotations

import contextlib
import difflib
import os
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

import vss_cli
from vss_cli.engine.progress import log
from vss_cli.errors import CheckpointError, ConfigError, Interrupted, RunNotFound, RunTakenOver
from vss_cli.signals import HANDLED_SIGNALS, install_signal_handlers, stop_requested  # noqa: F401 - torch-free
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


@dataclass
class CheckpointRef:
    """A checkpoint file and, when known, the run that produced it."""

    path: Path
    run: object | None = None

    @property
    def run_id(self) -> str | None:
        return getattr(self.run, "id", None)


def resolve_checkpoint(store, ref: str | Path, *, option: str = "--ckpt") -> CheckpointRef:
    """A path to an existing file, or a run id / unique prefix whose checkpoint artifact is used.

    A seed-style path `DIR/best.pt` or `DIR/pruned_model.pt`, where `--save DIR` wrote
    `DIR/<run id>/best.pt` or `.../pruned.pt`, resolves when DIR holds exactly one run's file (and
    says so); with several, the error lists them. A file the store knows must still have the sha256
    its run recorded (see `verify_artifact`)."""
    if ref is None or str(ref) == "":
        raise ConfigError(f"{option} is required: pass a checkpoint path or a run id (see `vss runs list`)")
    path = Path(ref)
    if not path.is_file() and looks_like_path(ref):
        path = seed_path(path, option)
    if path.is_file():
        run = store.run_for_artifact(path)
        if run is not None:
            verify_artifact(store, run, path)
        return CheckpointRef(path=path, run=run)
    try:
        run = store.get_run(str(ref))
    except RunNotFound:
        raise RunNotFound(
            f"{option} '{ref}' is neither a checkpoint file nor a run id: pass a .pt path or a run id from "
            "`vss runs list`"
        ) from None
    ckpt = store.artifact_path(run.id, kind="checkpoint")
    if not Path(ckpt).is_file():
        raise CheckpointError(f"run {run.id}'s checkpoint {ckpt} is missing on disk: rerun it or pass a file")
    verify_artifact(store, run, Path(ckpt))
    return CheckpointRef(path=Path(ckpt), run=run)


def resolve_checkpoints(store, refs: dict[str, str | Path]) -> dict[str, CheckpointRef]:
    """`resolve_checkpoint` for several options (`{"--baseline": ref, ...}`); every bad one is named
    in one error, so a user fixes them all at once."""
    resolved, problems = {}, []
    for option, ref in refs.items():
        try:
            resolved[option] = resolve_checkpoint(store, ref, option=option)
        except (CheckpointError, RunNotFound, ConfigError) as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise CheckpointError("; ".join(str(p) for p in problems))
    return resolved


VSS_CHECKPOINT_NAMES = ("best.pt", "last.pt", "pruned.pt")
# the research scripts' file names -> the file vss writes in its place
SEED_CHECKPOINT_NAMES = {"pruned_model.pt": "pruned.pt", "best_model.pt": "best.pt", "model.pt": "best.pt"}


def looks_like_path(ref: str | Path) -> bool:
    text = str(ref)
    return Path(text).suffix in (".pt", ".pth") or os.sep in text or "/" in text


def seed_path(path: Path, option: str) -> Path:
    """What a missing `DIR/NAME` means when `--save DIR` put each run in `DIR/<run id>/`: the one
    run folder's `NAME` (or vss's name for the seed's NAME). Raises naming the candidates when there
    are several, or the nearest file when there are none."""
    candidates = run_folder_candidates(path)
    folders = sorted({c.parent for c in candidates})
    if len(folders) == 1:
        chosen = candidates[0]
        log(f"{option} {path} -> {chosen} (the only run folder in {path.parent} with {chosen.name})")
        return chosen
    if folders:
        listed = ", ".join(str(c) for c in candidates[:6]) + (", ..." if len(candidates) > 6 else "")
        raise CheckpointError(f"{option} {path} does not exist and {path.parent} holds {len(folders)} runs' "
                              f"checkpoints: pass one of {listed} (or a run id from `vss runs list`)")
    raise CheckpointError(f"{option} {path} does not exist: {missing_hint(path)}")


def run_folder_candidates(path: Path) -> list[Path]:
    """`DIR/NAME` as `DIR/<run>/NAME`, or under vss's name for a seed file name; one per run folder."""
    folder = path.parent
    if not folder.is_dir():
        return []
    names = list(dict.fromkeys((path.name, SEED_CHECKPOINT_NAMES.get(path.name, path.name))))
    by_folder: dict[Path, Path] = {}
    for name in reversed(names):  # the name the user typed wins over its vss equivalent
        found = [folder / name] if name != path.name and (folder / name).is_file() else []
        for candidate in (*found, *sorted(folder.glob(f"*/{name}"))):
            by_folder[candidate.parent] = candidate
    return sorted(by_folder.values())


def missing_hint(path: Path) -> str:
    """What to pass instead of a missing checkpoint: the nearest existing `.pt` in (or one folder
    below) its folder, by name, newest first among equals."""
    folder = path.parent
    found = [p for p in (*folder.glob("*.pt"), *folder.glob("*/*.pt"))] if folder.is_dir() else []
    if not found:
        return "pass an existing .pt file or a run id (see `vss runs list`)"
    names = sorted({p.name for p in found})
    best_name = (difflib.get_close_matches(path.name, names, n=1, cutoff=0.0) or names)[0]
    best = max((p for p in found if p.name == best_name), key=lambda p: p.stat().st_mtime)
    writes = "" if path.name in VSS_CHECKPOINT_NAMES else \
        "vss writes best.pt/last.pt (train) and pruned.pt (prune); "
    return f"{writes}did you mean {best}?"


def recorded_input_size(dataset: dict | None, run=None) -> tuple[int, int] | None:
    """The input size a checkpoint was trained or pruned at: its dataset record, else its run's config."""
    size = (dataset or {}).get("input_size") or (getattr(run, "config", None) or {}).get("input_size")
    return (int(size[0]), int(size[1])) if size else None


def choose_input_size(given, recorded, default, *, recorded_from: str = "the checkpoint") -> tuple[int, int]:
    """`--input-size` when given, else the size recorded with the checkpoint, else the dataset's
    default; logs which one the command uses and why."""
    if given:
        size, why = tuple(given), "--input-size"
    elif recorded:
        size, why = tuple(recorded), f"recorded in {recorded_from}; pass --input-size to change it"
    else:
        size, why = tuple(default), "the dataset's default; pass --input-size to change it"
    log(f"input size {size[0]}x{size[1]} ({why})")
    return size


def verify_artifact(store, run, path: Path) -> None:
    """Refuse a file whose sha256 differs from what `run` recorded for it, naming the run that wrote
    it last when that is another one."""
    from vss_cli.store import file_sha256

    resolved = Path(path).resolve()
    rows = [a for a in store.artifacts(run.id) if Path(a.path) == resolved]
    if not rows:
        return
    recorded_sha, actual = rows[-1].sha256, file_sha256(resolved)
    if actual == recorded_sha:
        return
    writer = store.run_for_artifact(resolved)
    by = (f"run {writer.id} ({writer.kind}) wrote it since" if writer is not None and writer.id != run.id
          else "it was changed outside vss")
    raise CheckpointError(
        f"{resolved} is not the file run {run.id} ({run.kind}) recorded: sha256 {actual[:12]} on disk, "
        f"{recorded_sha[:12]} recorded; {by}: rerun {run.id} or pass the run that owns this file"
    )


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
    from vss_cli.data.checks import infer_dataset as from_layout

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
