"""Ids of runs and workers, whether a worker is alive, and digests of the files runs record (no
database access)."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from vss_cli.errors import ConfigError
from vss_cli.store.rows import Artifact, Run


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


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def process_scope() -> str:
    """8 hex digits naming the kernel boot and PID namespace this process runs in: two processes with
    the same scope can see each other's pids; with different scopes (another host, or a container on
    this host with its own PID namespace) a pid says nothing about the other process."""
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    boot = _read("/proc/sys/kernel/random/boot_id")
    if not (pidns and boot):
        return "00000000"  # no /proc: liveness by heartbeat age only (see `queue.worker_is_dead`)
    return hashlib.sha256(f"{boot}/{pidns}".encode()).hexdigest()[:8]


@dataclass
class _WorkerToken:
    """A fresh random token per process (a forked child gets its own)."""

    pid: int = -1
    value: str = ""

    def current(self) -> str:
        if self.pid != os.getpid():
            self.pid, self.value = os.getpid(), f"{process_scope()}.{secrets.token_hex(4)}"
        return self.value


_TOKEN = _WorkerToken()


def worker_id() -> str:
    """`host:pid:scope.token` of this process, recorded on the runs it holds: the host and pid to read,
    the scope (`process_scope`) and a random per-process token, so a worker in another PID namespace
    with the same host name and pid is never mistaken for this one."""
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN.current()}"


@dataclass(frozen=True)
class WorkerRef:
    """A parsed `worker_id`; rows written before tokens (`host:pid`) have no scope."""

    host: str
    pid: int | None
    scope: str | None

    @classmethod
    def parse(cls, worker: str | None) -> WorkerRef:
        parts = (worker or "").split(":")
        if len(parts) >= 3 and "." in parts[-1]:
            host, pid, token = ":".join(parts[:-2]), parts[-2], parts[-1]
            scope: str | None = token.partition(".")[0]
        else:
            host, pid, scope = ":".join(parts[:-1]), parts[-1] if parts else "", None
        return cls(host, int(pid) if pid.isdigit() else None, scope)


def worker_is_dead(worker: str | None) -> bool:
    """True when `worker` (a `worker_id`) is a process this one can see is gone: same kernel boot and PID
    namespace (`process_scope`), and no process has its pid. Anywhere else (another host, a container
    with its own PID namespace but the same host name, rows written before worker tokens) a pid proves
    nothing, and only the heartbeat's age tells (`is_stale`)."""
    ref = WorkerRef.parse(worker)
    if ref.scope is None or ref.scope == "00000000" or ref.scope != process_scope():
        return False
    if ref.host != socket.gethostname() or ref.pid is None or ref.pid == os.getpid():
        return False
    try:
        os.kill(ref.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def is_stale(run: Run, grace_s: float) -> bool:
    """No heartbeat within the last `grace_s` seconds."""
    beat = run.heartbeat_at
    return beat is None or beat < datetime.now(timezone.utc) - timedelta(seconds=grace_s)


def is_live(run: Run, grace_s: float) -> bool:
    """Held by a process that is (as far as this host can tell) alive and heartbeating."""
    return run.status == "running" and not is_stale(run, grace_s) and not worker_is_dead(run.worker)


def holder(run: Run) -> str:
    """Who holds a running run and how fresh its heartbeat is, for messages."""
    beat = run.heartbeat_at
    age = f"{(datetime.now(timezone.utc) - beat).total_seconds():.0f} s ago" if beat else "never"
    return f"worker {run.worker} (attempt {run.attempt}, last heartbeat {age})"


def refuse_live(run: Run, grace_s: float, what: str) -> None:
    """ConfigError naming the holder when `run` is live: `what` (e.g. "--resume") cannot take it."""
    if is_live(run, grace_s):
        raise ConfigError(
            f"{what}: run {run.id} is held by {holder(run)}: stop that process first, or wait until its "
            f"heartbeat is {grace_s:.0f} s old"
        )


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
