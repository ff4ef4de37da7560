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
