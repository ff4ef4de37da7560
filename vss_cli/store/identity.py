"""Ids of runs and workers, and digests of the files runs record (no database access)."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from vss_cli.store.rows import Artifact


@dataclass
class _RunIdClock:
    """Run ids: 12 hex digits of the millisecond clock + 8 hex digits, strictly increasing per process."""

    last_ms: int = 0
    last_rand: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> str:
        with self.lock:
            ms = max(time.time_ns() // 1_000_000, self.last_ms)
            rand = self.last_rand + 1 if ms == self.last_ms else secrets.randbits(31)
            if rand >= 1 << 32:
                ms, rand = ms + 1, secrets.randbits(31)
            self.last_ms, self.last_rand = ms, rand
        return f"{ms:012x}{rand:08x}"


new_run_id = _RunIdClock().next


def worker_id() -> str:
    """`host:pid` of this process, recorded on the runs it works on."""
    return f"{socket.gethostname()}:{os.getpid()}"


def file_digest(path: Path) -> tuple[str, int]:
    """sha256 hex and size in bytes of a file."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file (what config keys and artifact rows record)."""
    return file_digest(Path(path))[0]


def artifact_intact(artifact: Artifact) -> bool:
    """The file still exists with the recorded size and sha256."""
    path = artifact.path
    if not path.is_file() or path.stat().st_size != artifact.bytes:
        return False
    return file_digest(path)[0] == artifact.sha256
