"""Paths a command is given, resolved and checked before torch is imported (so a typo fails in a
moment): checkpoint references (a file, a run id, or the seed's `DIR/best.pt` under `--save DIR`),
their sha256 against the store, data roots, and the input size a checkpoint records."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from vss_cli.engine.progress import log
from vss_cli.errors import CheckpointError, ConfigError, DataError, RunNotFound


@dataclass
class CheckpointRef:
    """A checkpoint file and, when known, the run that produced it."""

    path: Path
    run: object | None = None

    @property
    def run_id(self) -> str | None:
        return getattr(self.run, "id", None)


def resolve_checkpoint(store, ref: str | Path, *, option: str = "--ckpt", say: bool = True) -> CheckpointRef:
    """A path to an existing file, or a run id / unique prefix whose checkpoint artifact is used.

    A seed-style path `DIR/best.pt` or `DIR/pruned_model.pt`, where `--save DIR` wrote
    `DIR/<run id>/best.pt` or `.../pruned.pt`, resolves when DIR holds exactly one run's file (and
    says so); with several, the error lists them. A file the store knows must still have the sha256
    its run recorded (see `verify_artifact`)."""
    if ref is None or str(ref) == "":
        raise ConfigError(f"{option} is required: pass a checkpoint path or a run id (see `vss runs list`)")
    path = Path(ref)
    if not path.is_file() and looks_like_path(ref):
        path = seed_path(path, option, say=say)
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


def resolve_checkpoints(store, refs: dict[str, str | Path], *, say: bool = True) -> dict[str, CheckpointRef]:
    """`resolve_checkpoint` for several options (`{"--baseline": ref, ...}`); every bad one is named
    in one error, so a user fixes them all at once."""
    resolved, problems = {}, []
    for option, ref in refs.items():
        try:
            resolved[option] = resolve_checkpoint(store, ref, option=option, say=say)
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


def seed_path(path: Path, option: str, *, say: bool = True) -> Path:
    """What a missing `DIR/NAME` means when `--save DIR` put each run in `DIR/<run id>/`: the one
    run folder's `NAME` (or vss's name for the seed's NAME). Raises naming the candidates when there
    are several, or the nearest file when there are none."""
    candidates = run_folder_candidates(path)
    folders = sorted({c.parent for c in candidates})
    if len(folders) == 1:
        chosen = candidates[0]
        if say:
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


def precheck(data_root: str | Path | None = None, checkpoints: dict[str, str | Path | None] | None = None,
             store=None) -> None:
    """Fail fast (exit 2, before torch loads) on a missing data root or checkpoint; every missing
    checkpoint is named at once. Empty references are left to the workflow's own message."""
    if data_root is not None and not Path(data_root).expanduser().is_dir():
        raise DataError(f"data root {data_root} does not exist: pass --data-root pointing at the dataset folder")
    given = {option: ref for option, ref in (checkpoints or {}).items() if ref}
    if given:
        resolve_checkpoints(store, given, say=False)
