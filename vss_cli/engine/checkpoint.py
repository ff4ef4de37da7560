"""Checkpoints as DESIGN §4: one `.pt` that loads with `torch.load(..., weights_only=True)`.

A checkpoint is a plain dict: a format tag, the model spec (name, num_classes, builder kwargs), the
Torch-Pruning pruning history (empty for an unpruned model), the state_dict, the dataset spec and
optional training state. This module writes and reads that dict; rebuilding the model (build from
spec, replay the history on a fresh dependency graph, strict load) lives beside the replay, in
`vss_cli.pruning.checkpoint`. No pickled modules anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from vss_cli.errors import CheckpointError
from vss_cli.fileio import atomic_output

FORMAT = "vss-checkpoint/1"


@dataclass
class ModelSpec:
    """What is needed to rebuild a model's unpruned architecture. `source`: for a model from outside
    the registry (smp, import path, entry point), where its code comes from and at which package
    version (`vss_cli.models.model_provenance`); empty for a registered model."""

    name: str
    num_classes: int
    kwargs: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"name": self.name, "num_classes": int(self.num_classes), "kwargs": dict(self.kwargs)}
        return {**d, "source": dict(self.source)} if self.source else d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(name=d["name"], num_classes=int(d["num_classes"]), kwargs=dict(d.get("kwargs", {})),
                   source=dict(d.get("source", {})))


def atomic_torch_save(obj, path: Path) -> Path:
    """torch.save through an atomic write (temporary file, fsync, rename)."""
    with atomic_output(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def _plain_history(history) -> list:
    """Torch-Pruning history entries as plain lists of str/bool/int (weights_only-safe)."""
    return [[str(name), bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in history]


def _cpu_state(model: nn.Module) -> dict:
    module = model.module if hasattr(model, "module") else model
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    spec: ModelSpec,
    history=(),
    dataset: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Save a model checkpoint atomically; returns the path."""
    if not spec.source and getattr(model, "vss_source", None):
        spec = ModelSpec(spec.name, spec.num_classes, spec.kwargs, dict(model.vss_source))
    payload = {
        "format": FORMAT,
        "model": spec.to_dict(),
        "pruning_history": _plain_history(history),
        "state_dict": _cpu_state(model),
        "dataset": dict(dataset or {}),
        "extra": dict(extra or {}),
    }
    return atomic_torch_save(payload, Path(path))


def read_checkpoint(path: Path) -> dict:
    """Load the raw checkpoint dict with weights_only=True, turning failures into one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass an existing .pt file or a run id")
    convert = (f"pass a checkpoint written by vss, or convert a research-script checkpoint with "
               f"`vss import {path} --model NAME`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
        raise CheckpointError(f"checkpoint {path} cannot be read as a vss checkpoint ({type(exc).__name__}): "
                              f"{convert}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vss checkpoint ({FORMAT}): {convert}")
    return payload
