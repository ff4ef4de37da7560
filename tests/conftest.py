"""Shared fixtures: every test gets its own database and working directory; no progress bars."""

from __future__ import annotations

import os

import pytest
import torch

# One intra-op thread: on a 2-core machine shared with subprocess tests, two OpenMP threads per
# process oversubscribe the cores and tiny convolutions slow down by two orders of magnitude.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VSS_DB", str(tmp_path / "vss.db"))
    monkeypatch.setenv("VSS_QUIET", "1")
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def tiny_batches():
    """Two fixed (images, labels) batches of 4 × 3 × 32 × 32 with 5 classes and some ignore pixels."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        x = torch.randn(4, 3, 32, 32, generator=g)
        y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0.5).long()
        y[:, :2, :2] = 255
        batches.append((x, y))
    return batches
