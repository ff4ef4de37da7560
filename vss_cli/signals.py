"""SIGTERM and SIGHUP handled like Ctrl-C (no torch imports: `vss` installs them before any command).

A stop signal raises `errors.Interrupted` (Ctrl-C: KeyboardInterrupt) in the main thread, except inside
`deferred_signals()`: there it is held until the block ends (a file write, which an exception raised
in the middle would tear: torch's zip writer turns it into "RuntimeError: unexpected pos"). The first
stop signal is also remembered (`stop_requested`), so a loop that catches a failure whose cause was the
signal (a grid cell) still stops instead of taking more work.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

from vss_cli.errors import Interrupted

HANDLED_SIGNALS = ("SIGTERM", "SIGHUP")
DEFERRED_SIGNALS = ("SIGINT", *HANDLED_SIGNALS)

_received: list[int] = []  # the first stop signal this process got (SIGINT, SIGTERM or SIGHUP)


def _remember(signum: int) -> None:
    if not _received:
        _received.append(signum)


def stop_requested() -> Interrupted | KeyboardInterrupt | None:
    """The interruption a stop signal asked for (None when none came): Interrupted for SIGTERM/SIGHUP,
    KeyboardInterrupt for Ctrl-C."""
    if not _received:
        return None
    signum = _received[0]
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return Interrupted(signum, signal.Signals(signum).name)


def install_signal_handlers() -> None:
    """Turn the first SIGTERM / SIGHUP into `errors.Interrupted` in the main thread (what Ctrl-C
    does with KeyboardInterrupt), so `recorded` marks the run interrupted; later ones are ignored
    while that cleanup runs. Ctrl-C is remembered too (`stop_requested`)."""
    def handler(signum, _frame):
        _remember(signum)
        for name in HANDLED_SIGNALS:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_IGN)
        raise Interrupted(signum, signal.Signals(signum).name)

    def on_ctrl_c(signum, frame):
        _remember(signum)
        signal.default_int_handler(signum, frame)

    for name in HANDLED_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_ctrl_c)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT / SIGTERM / SIGHUP while the block runs; on leaving it, the first one held is
    delivered to the handlers that were in place (so it interrupts right after the block, not in it).
    Outside the main thread (where handlers cannot be set) the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    names = [n for n in DEFERRED_SIGNALS if hasattr(signal, n)]
    previous = {n: signal.signal(getattr(signal, n), lambda signum, _f: held.append(signum)) for n in names}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), signal.SIG_DFL if handler is None else handler)
        if held:
            signal.raise_signal(held[0])


def leave_stop_signals_to_the_parent(_worker_id: int = 0) -> None:
    """`worker_init_fn` of DataLoader workers: ignore SIGTERM / SIGHUP. A scheduler signals the whole
    process group; the main process turns it into `Interrupted` and shuts its workers down in order,
    instead of each worker dying at once and the loader raising "DataLoader worker is killed by signal"
    over the interruption. Workers still exit with their parent (the loader's watchdog)."""
    for name in HANDLED_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    sys.excepthook = _quiet_when_the_parent_hangs_up(sys.excepthook)


def _quiet_when_the_parent_hangs_up(previous):
    """A worker's excepthook that drops connection errors: multiprocessing's resource sharer (the thread
    that hands a batch's shared-memory file descriptors to the parent) reports through `sys.excepthook`
    when the parent, stopped by a signal mid-transfer, closes the connection. That is the stop working
    as intended, not a failure to print a traceback for; every other error still reaches `previous`."""
    def hook(exc_type, exc, tb):
        if issubclass(exc_type, (ConnectionError, EOFError)):
            return
        previous(exc_type, exc, tb)

    return hook
