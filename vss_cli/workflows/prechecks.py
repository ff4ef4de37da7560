"""Checks a workflow runs before its run row exists, so bad input (exit 2) writes nothing: output
locations of the right kind, an input size the network can take, a baseline that is the candidate's
ancestor."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.func import functional_call

from vss_cli.errors import ConfigError


def check_folder_option(path: str | Path | None, flag: str, example: str) -> None:
    """`flag` names a folder vss creates runs in: an existing file there is refused."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"{flag} {path} is a file, and vss writes a folder there ({example}): "
                          "pass a folder path, or remove the file")


def check_file_option(path: str | Path | None, flag: str) -> None:
    """`flag` names a file vss writes: an existing folder there is refused, as is a parent that is a file."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder: pass a file name, such as {path / 'report.json'}")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"{flag} {path}: {blocking} is a file, not a folder: pass a path in a folder")


def check_input_size(model: torch.nn.Module, input_size, device, *, flag: str = "--input-size") -> None:
    """A forward pass of one blank image at `input_size` in eval mode: a size the network cannot take
    (smaller than its downsampling, or a shape its skips cannot join) is refused before anything is
    written. The pass runs on the meta device (shapes only: milliseconds at any size); only when that
    fails is it repeated on `device`, whose outcome decides (a model may do what meta tensors cannot)."""
    h, w = (int(v) for v in input_size)
    if h < 1 or w < 1:
        raise ConfigError(f"{flag} {h},{w} must be positive: pass H,W such as 256,512")
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                meta = {k: v.to("meta") for k, v in [*model.named_parameters(), *model.named_buffers()]}
                functional_call(model, meta, (torch.zeros(1, 3, h, w, device="meta"),))
            except Exception:  # noqa: BLE001 - only the real pass below decides
                model(torch.zeros(1, 3, h, w, device=device))
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{flag} {h},{w} is not a size this network takes (a forward pass fails: {reason}): "
                          "pass a larger H,W, best a multiple of 32, such as the dataset's default size") from None
    finally:
        model.train(training)


def _history(loaded) -> list[tuple]:
    return [(str(name), bool(out), tuple(int(i) for i in idxs)) for name, out, idxs in loaded.history]


def _ancestors(store, run_id: str, depth: int = 64) -> set[str]:
    seen: set[str] = set()
    frontier = [run_id]
    for _ in range(depth):
        frontier = [p.id for r in frontier for _, p in store.parents(r) if p.id not in seen]
        if not frontier:
            break
        seen.update(frontier)
    return seen


def check_baseline_is_ancestor(store, base_ref, cand_ref, base, cand) -> None:
    """The baseline must be what the candidate was pruned (and fine-tuned) from: the same network whose
    pruning history the candidate's extends and, when the store knows both runs, an ancestor run.
    Swapped options are named as such."""
    if Path(base_ref.path).resolve() == Path(cand_ref.path).resolve():
        return
    swap = f"pass --baseline {cand_ref.run_id or cand_ref.path} --candidate {base_ref.run_id or base_ref.path}"
    if base.spec.name != cand.spec.name:
        raise ConfigError(f"baseline {base_ref.path} is a {base.spec.name} but candidate {cand_ref.path} a "
                          f"{cand.spec.name}: pass the checkpoint the candidate was pruned from as --baseline")
    bh, ch = _history(base), _history(cand)
    if ch[:len(bh)] != bh:
        if bh[:len(ch)] == ch:
            raise ConfigError(f"--baseline and --candidate look swapped: the baseline {base_ref.path} is pruned "
                              f"further than the candidate {cand_ref.path}: {swap}")
        raise ConfigError(f"baseline {base_ref.path} is not an ancestor of candidate {cand_ref.path} (the candidate "
                          "was not pruned from it): pass the checkpoint the candidate was pruned from as --baseline")
    if base_ref.run_id and cand_ref.run_id and base_ref.run_id != cand_ref.run_id:
        if base_ref.run_id in _ancestors(store, cand_ref.run_id):
            return
        if cand_ref.run_id in _ancestors(store, base_ref.run_id):
            raise ConfigError(f"--baseline and --candidate look swapped: run {cand_ref.run_id} is an ancestor of "
                              f"run {base_ref.run_id}: {swap}")
        raise ConfigError(f"baseline run {base_ref.run_id} is not an ancestor of candidate run {cand_ref.run_id} "
                          "(see `vss runs show` for its lineage): pass the run the candidate was pruned from")
