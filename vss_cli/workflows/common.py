"""Pieces every workflow shares: device choice, checkpoint references, run recording."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

import vss_cli
from vss_cli.errors import CheckpointError, ConfigError, RunNotFound


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
    """A path to an existing file, or a run id / unique prefix whose checkpoint artifact is used."""
    if ref is None or str(ref) == "":
        raise ConfigError(f"{option} is required: pass a checkpoint path or a run id (see `vss runs list`)")
    path = Path(ref)
    if path.is_file():
        run = store.run_for_artifact(path)
        return CheckpointRef(path=path, run=run)
    looks_like_path = path.suffix in (".pt", ".pth") or os.sep in str(ref)
    try:
        run = store.get_run(str(ref))
    except RunNotFound:
        if looks_like_path:
            raise CheckpointError(f"checkpoint {ref} does not exist: pass an existing .pt file or a run id") from None
        raise RunNotFound(
            f"'{ref}' is neither a checkpoint file nor a run id: pass a .pt path or a run id from `vss runs list`"
        ) from None
    ckpt = store.artifact_path(run.id, kind="checkpoint")
    if not Path(ckpt).is_file():
        raise CheckpointError(f"run {run.id}'s checkpoint {ckpt} is missing on disk: rerun it or pass a file")
    return CheckpointRef(path=Path(ckpt), run=run)


def check_model_name(expected: str | None, loaded_name: str, path) -> None:
    """`--model` on prune/eval (the seed's command lines pass it) must name the checkpoint's model."""
    if expected and expected != loaded_name:
        raise ConfigError(f"--model {expected} does not match {path}, which holds a {loaded_name}: "
                          "drop --model or pass the matching checkpoint")


def default_out_dir(kind: str, run_id: str, save: Path | None) -> Path:
    return Path(save) if save else Path("runs") / kind / run_id


@contextlib.contextmanager
def recorded(store, run_id: str, *, during: str | None = None, complete: bool = True) -> Iterator[None]:
    """Mark the run interrupted on Ctrl-C, failed (with the error) on any other exception, and
    completed on success unless `complete` is False (a run that goes on after this step). `during`
    names the step in the recorded error."""
    where = f" while {during}" if during else ""
    try:
        yield
    except KeyboardInterrupt:
        store.set_status(run_id, "interrupted", error=f"interrupted{where or ' by the user'}")
        raise
    except BaseException as exc:
        store.set_status(run_id, "failed", error=f"{type(exc).__name__}{where}: {exc}")
        raise
    else:
        if complete:
            store.set_status(run_id, "completed")
