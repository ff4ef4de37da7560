"""Error family. A `VssError` is bad input: the CLI prints its one-line message and exits 2."""


class VssError(Exception):
    """Bad input. The message names the problem and what to do about it."""

    exit_code = 2


class DataError(VssError):
    """The dataset root, layout or files are not usable."""


class CheckpointError(VssError):
    """A checkpoint is missing, unreadable or does not match the model spec."""


class RunNotFound(VssError):
    """A run id or prefix matches no run, or more than one."""


class ConfigError(VssError):
    """An option value is out of range or inconsistent."""


class StoreError(VssError):
    """The lineage database cannot be used: a bad URL, unreachable, corrupt, read-only or newer."""


class StoreUnavailable(StoreError):
    """The database stayed unreachable or locked for the whole retry window (`VSS_DB_RETRY_S`)."""


class RunTakenOver(VssError):
    """Another worker claimed the run this process was working on (its heartbeat had gone stale)."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP (what schedulers send), handled like Ctrl-C; exits 128 + the signal number."""

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(f"{name} received")
        self.signum, self.signal_name = signum, name
        self.exit_code = 128 + signum


class DiskFull(OSError):
    """A write ran out of space (ENOSPC, EDQUOT): a failure while running (exit 1) whose message is one
    line naming the path; the partial file is removed."""

    exit_code = 1

    def __init__(self, path, cause: OSError) -> None:
        super().__init__(cause.errno, f"disk full: {path}: free space there or write elsewhere (--save, --out-dir)")
        self.path = path

    def __str__(self) -> str:
        return self.strerror
