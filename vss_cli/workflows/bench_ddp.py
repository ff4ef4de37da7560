"""A bench cell's fine-tune on several processes: `torchrun` runs this module, each rank calls the one
`train_run` (gloo on CPU, nccl on CUDA); rank 0 records the finetune run, linked `step-of` from the cell
in the transaction that creates it, and writes its id to the file the parent reads. The database URL
(which may hold a password) reaches the workers through their environment (`VSS_DB`), never the job file.

    python -m torch.distributed.run --standalone --nproc-per-node N -m vss_cli.workflows.bench_ddp JOB.json
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from vss_cli.errors import ConfigError
from vss_cli.fileio import write_json
from vss_cli.workflows.options import TrainOptions, from_plain, to_plain

DB_ENV = "VSS_DB"  # the workers' database URL, password included: in their environment only
STOP_GRACE_S = 60.0  # how long a stopped torchrun gets to end its workers before SIGKILL


def finetune_under_torchrun(opts: TrainOptions, *, db_url: str, cell_id: str, nproc: int, job_dir: Path) -> str:
    """Run the fine-tune on `nproc` processes and return the finetune run's id."""
    job_dir.mkdir(parents=True, exist_ok=True)
    job = write_json(job_dir / "ddp_job.json", {"options": to_plain(opts), "cell": cell_id,
                                                "result": str(job_dir / "ddp_run_id.txt")})
    env = {**os.environ, DB_ENV: db_url, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen(torchrun_command(nproc, job), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM to this process alone: the workers must stop too
        stop_torchrun(proc)
        raise
    result = job_dir / "ddp_run_id.txt"
    if proc.returncode != 0 or not result.is_file():
        tail = " | ".join((err or out).strip().splitlines()[-3:])
        raise RuntimeError(f"torchrun fine-tune on {nproc} processes failed (exit {proc.returncode}): {tail}")
    return result.read_text().strip()


def torchrun_command(nproc: int, job: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "vss_cli.workflows.bench_ddp", str(job)]


def stop_torchrun(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Pass SIGTERM on to torchrun, which stops its workers (rank 0 ends its run interrupted), and wait
    for it; SIGKILL after `grace_s`. (A scheduler that signals the whole job has signalled them already.)"""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def main(job_path: str) -> None:
    from vss_cli.store import Store
    from vss_cli.store.queue import Heartbeat, StepStore
    from vss_cli.workflows.train import train_run

    job = json.loads(Path(job_path).read_text())
    opts = from_plain(TrainOptions, job["options"])
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise ConfigError("bench_ddp runs under torchrun with --nproc-per-node 2 or more")
    if not os.environ.get(DB_ENV):
        raise ConfigError(f"bench_ddp reads its database URL from ${DB_ENV}: run it through `vss bench --nproc-per-cell`")
    with Store(os.environ[DB_ENV]) as store, Heartbeat(store, interval_s=30.0) as beat:
        outcome = train_run(opts, StepStore(store, beat, parents=[(job["cell"], "step-of")]), kind="finetune")
        if outcome.run_id is not None:
            Path(job["result"]).write_text(outcome.run_id)


if __name__ == "__main__":
    from vss_cli.signals import install_signal_handlers

    install_signal_handlers()  # SIGTERM (Slurm signals every process of the job): rank 0's run ends interrupted
    try:
        main(sys.argv[1])
    except KeyboardInterrupt as exc:
        sys.exit(getattr(exc, "exit_code", 130))
