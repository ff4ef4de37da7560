"""Atomic file writes: a temporary file in the target folder, fsync, then rename over the target.

An interrupted or failing write never leaves a half-written artifact behind: a stop signal that comes
during the write is held until the file is complete and renamed (`signals.deferred_signals`), and a
full disk is reported as `errors.DiskFull` naming the path, whatever wrapped it (torch's zip writer
turns the OSError into "RuntimeError: unexpected pos").
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from vss_cli.errors import DiskFull
from vss_cli.signals import deferred_signals

FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Yield a file to write; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with deferred_signals():
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            _raise_if_disk_full(exc, path)
            raise
        try:
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
            os.replace(tmp, path)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            _raise_if_disk_full(exc, path)
            raise


def _raise_if_disk_full(exc: BaseException, path: Path) -> None:
    """Raise `DiskFull` when `exc`, or an exception it was raised from or during, is a full disk."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL_DISK_ERRNOS and not isinstance(seen, DiskFull):
            raise DiskFull(path, seen) from seen
        seen = seen.__cause__ or seen.__context__


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_safe(obj):
    """NaN/inf become null, numpy scalars plain numbers, tuples lists: the result is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj) -> Path:
    """Write `obj` as strict, indented JSON atomically; returns the path."""
    with atomic_output(path, "w") as f:
        json.dump(json_safe(obj), f, indent=2, allow_nan=False)
    return Path(path)
