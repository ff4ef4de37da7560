"""How many CPU threads torch uses: `--threads N` (or `VSS_THREADS`), else `OMP_NUM_THREADS` when set,
else half the CPUs this process may run on (at least one).

Why half: torch's own default is every core, and its intra-op threads wait on each other by spinning.
When another CPU-heavy job shares the machine, every step then waits for the slowest thread: on the
2-core machine this project is built on, issue 25 saw `vss prune` take 54.5 s at torch's default
against 13.7 s with one thread, and `benchmarks/threads.py` measured training steps 3-4x slower alone
and 7-10x slower beside one more torch job (numbers in README "Threads"). Half the cores leaves room for one other job and, alone, costs less than the
collapse it avoids. The count is fixed per machine, never taken from the current load, so the same
command computes the same numbers whatever else runs.

Set before torch is imported, the count reaches torch through `OMP_NUM_THREADS` (child processes,
data-loader workers and torchrun included); when torch is already imported, `torch.set_num_threads`.
"""

from __future__ import annotations

import os
import sys


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Half the usable CPUs, at least one."""
    return max(1, usable_cpus() // 2)


def apply_threads(threads: int | None) -> int | None:
    """Use `threads` (the --threads value), else the default unless OMP_NUM_THREADS is set; returns the
    count set (None when OMP_NUM_THREADS decides)."""
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return None
    count = threads or default_threads()
    os.environ["OMP_NUM_THREADS"] = str(count)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(count)
    return count
