"""Random-number state: seeding a run, and saving/restoring the generators with a resumable checkpoint
(so a resumed run draws the same batches and augmentations it would have drawn without the stop)."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """torch's and Python's generator states, in a form `torch.load(weights_only=True)` reads back."""
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "python": [int(version), [int(v) for v in internal], gauss]}


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
