"""Which torch thread count holds on a shared CPU? Training steps of the default model, alone and beside
another torch job, at torch's default thread count and at vss's default (`vss_cli.threads`).

Each measurement is a fresh process (its own thread pool) running forward + backward steps of the
synthetic dataset's default model (U-Net, width 0.25, batch 8 at 64x96) for `--seconds`, after two
warm-up steps; it reports the median seconds per step. "Beside another torch job" starts a second
process first that runs the same steps without pause at torch's default thread count (another agent's
`vss train` on the same machine) and stops it afterwards.

    python benchmarks/threads.py                 # 2 thread counts x alone / beside: 1 min idle, 3-4 min loaded
    python benchmarks/threads.py --threads 1,2,4 --seconds 15

The machine's 1-minute load average is printed with each row: on a machine other people use, "alone"
means "with no competitor of ours", not idle.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP_CODE = """
import statistics, sys, time, torch
threads, seconds = int(sys.argv[1]), float(sys.argv[2])
if threads > 0:
    torch.set_num_threads(threads)
from vss_cli.models import build_model
torch.manual_seed(0)
model = build_model("unet", 19, width=0.25).train()
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(8, 3, 64, 96), torch.randint(0, 19, (8, 64, 96))
def step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x)["out"], y).backward()
    opt.step()
for _ in range(2):
    step()
times, end = [], time.monotonic() + seconds
while time.monotonic() < end or len(times) < 3:
    t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
    if seconds <= 0:
        break
print(torch.get_num_threads(), len(times), statistics.median(times))
"""


def _env(threads_env: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    if threads_env:
        env["OMP_NUM_THREADS"] = threads_env
    return env


def measure(threads: int, seconds: float) -> tuple[int, int, float]:
    """(threads used, steps, median s/step) of a fresh process; threads 0 = torch's default."""
    out = subprocess.run([sys.executable, "-c", STEP_CODE, str(threads), str(seconds)], env=_env(None),
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1]), float(out[2])


def competitor() -> subprocess.Popen:
    """Another torch job at torch's default thread count, stepping without pause until stopped."""
    return subprocess.Popen([sys.executable, "-c", STEP_CODE, "0", "100000"], env=_env(None),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    from vss_cli.threads import default_threads

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default=None, help="comma-separated counts (0 = torch's default; "
                    "default: 0 and vss's default)")
    ap.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")] if args.threads else [0, default_threads()]
    print(f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; vss default {default_threads()} thread(s)")
    print(f"{'setting':<28} {'threads':>7} {'steps':>5} {'s/step':>7} {'vs alone':>8} {'load1':>5}")
    for beside in (False, True):
        job = competitor() if beside else None
        try:
            if job is not None:
                time.sleep(3)  # let it warm up
            for n in counts:
                used, steps, median = measure(n, args.seconds)
                alone = ALONE.setdefault(n, median) if not beside else ALONE.get(n)
                label = ("torch default" if n == 0 else f"--threads {n}") + (", beside a job" if beside else ", alone")
                ratio = f"x{median / alone:.2f}" if alone else ""
                print(f"{label:<28} {used:>7} {steps:>5} {median:>7.3f} {ratio:>8} {os.getloadavg()[0]:>5.1f}",
                      flush=True)
        finally:
            if job is not None:
                job.terminate()
                job.wait()


ALONE: dict[int, float] = {}

if __name__ == "__main__":
    main()
