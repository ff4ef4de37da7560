"""SIGTERM and SIGHUP handled like Ctrl-C (no torch imports: `vss` installs them before any command)."""

from __future__ import annotations

import signal

from vss_cli.errors import Interrupted

HANDLED_SIGNALS = ("SIGTERM", "SIGHUP")


def install_signal_handlers() -> None:
    """Turn the first SIGTERM / SIGHUP into `errors.Interrupted` in the main thread (what Ctrl-C
    does with KeyboardInterrupt), so `recorded` marks the run interrupted; later ones are ignored
    while that cleanup runs."""
    def handler(signum, _frame):
        for name in HANDLED_SIGNALS:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_IGN)
        raise Interrupted(signum, signal.Signals(signum).name)

    for name in HANDLED_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)


def leave_stop_signals_to_the_parent(_worker_id: int = 0) -> None:
    """`worker_init_fn` of DataLoader workers: ignore SIGTERM / SIGHUP. A scheduler signals the whole
    process group; the main process turns it into `Interrupted` and shuts its workers down in order,
    instead of each worker dying at once and the loader raising "DataLoader worker is killed by signal"
    over the interruption. Workers still exit with their parent (the loader's watchdog)."""
    for name in HANDLED_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
