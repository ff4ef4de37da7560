"""Loading a checkpoint back into a model: build from its spec, replay the Torch-Pruning history on a
fresh dependency graph (`surgery.replay_history`), load the weights with strict=True (DESIGN §4).

It lives in the pruning layer because replaying a pruning history is pruning; `engine.checkpoint`
only writes and reads the checkpoint dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from vss_cli.engine.checkpoint import ModelSpec, read_checkpoint
from vss_cli.errors import CheckpointError, ConfigError
from vss_cli.pruning.surgery import replay_history


@dataclass
class LoadedCheckpoint:
    model: nn.Module
    spec: ModelSpec
    history: list
    dataset: dict
    extra: dict
    path: Path


def build_from_spec(spec: ModelSpec, history=()) -> nn.Module:
    """Build the unpruned architecture and replay a pruning history on it; a model from outside the
    registry is first checked against the code and package version it was made with."""
    from vss_cli.models import build_model, check_provenance

    try:
        check_provenance(spec.name, spec.source)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    model = build_model(spec.name, spec.num_classes, **spec.kwargs)
    if history:
        replay_history(model, history)
    return model


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model of a checkpoint (pruned architectures included) with its exact weights."""
    payload = read_checkpoint(path)
    spec = ModelSpec.from_dict(payload["model"])
    history = payload.get("pruning_history", [])
    model = build_from_spec(spec, history)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} does not match its model spec ({first}): it may come from another vss version"
        ) from None
    model.to(device).eval()
    return LoadedCheckpoint(
        model=model,
        spec=spec,
        history=history,
        dataset=payload.get("dataset", {}),
        extra=payload.get("extra", {}),
        path=Path(path),
    )
