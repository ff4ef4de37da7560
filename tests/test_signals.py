"""SIGTERM / SIGHUP are handled like Ctrl-C; runs heartbeat while they work; logs off a terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vss_cli.errors import Interrupted
from vss_cli.pruning.checkpoint import load_checkpoint
from vss_cli.signals import install_signal_handlers
from vss_cli.store import Store, file_sha256
from vss_cli.workflows.common import recorded


def train_args(iters: int) -> list[str]:
    return [sys.executable, "-m", "vss_cli", "train", "--epochs", "3", "--width", "0.125", "--input-size", "32,48",
            "--batch-size", "8", "--max-iters-per-epoch", str(iters), "--device", "cpu"]


def _env(tmp_path: Path, **extra) -> dict:
    env = {**os.environ, "VSS_DB": str(tmp_path / "r.db"), "OMP_NUM_THREADS": "1", **extra}
    env.pop("VSS_QUIET", None)
    return env


def _wait_for(pattern: str, root: Path, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not list(root.glob(pattern)) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before the signal could be sent"


def test_sigterm_mid_epoch_marks_interrupted_and_resume_continues(tmp_path):
    env, args = _env(tmp_path, VSS_QUIET="1"), train_args(12)
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    _wait_for("runs/train/*/last.pt", tmp_path, proc)
    time.sleep(0.05)  # into the second epoch
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    (run,) = Store(tmp_path / "r.db").list_runs(kind="train")
    assert run.status == "interrupted" and "SIGTERM" in (run.error or "")
    last = Path(run.out_dir) / "last.pt"
    epoch = load_checkpoint(last).extra["epoch"]  # intact: it loads, strict, with its training state
    assert epoch < 2
    done = subprocess.run([*args, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    store = Store(tmp_path / "r.db")
    (again,) = store.list_runs(kind="train")
    assert again.id == run.id and again.status == "completed"
    assert sorted({m.step for m in store.metrics(run.id, "train_loss")}) == [0, 1, 2]


def test_sigterm_to_the_process_group_with_loader_workers(tmp_path):
    """What Slurm's scancel does: SIGTERM to every process of the job, DataLoader workers included. The
    run ends interrupted (not failed on "DataLoader worker is killed by signal"), without a traceback."""
    env = _env(tmp_path, VSS_QUIET="1")
    proc = subprocess.Popen([*train_args(12), "--num-workers", "2"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for("runs/train/*/last.pt", tmp_path, proc)
    time.sleep(0.2)  # the second epoch's workers are up
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "killed by signal" not in err, err[-4000:]
    (run,) = Store(tmp_path / "r.db").list_runs(kind="train")
    assert run.status == "interrupted" and "SIGTERM" in (run.error or "")


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_signal_inside_recorded_marks_the_run_interrupted(name, code):
    store = Store(Path("s.db"))
    run = store.create_run(kind="train", config={"n": 1}, status="running")
    saved = {s: signal.getsignal(getattr(signal, s)) for s in ("SIGTERM", "SIGHUP")}
    try:
        install_signal_handlers()
        with pytest.raises(Interrupted) as caught, recorded(store, run.id):
            os.kill(os.getpid(), getattr(signal, name))
            time.sleep(5)  # the handler raises before this ends
    finally:
        for s, handler in saved.items():
            signal.signal(getattr(signal, s), handler)
    assert caught.value.exit_code == code
    after = store.get_run(run.id)
    assert after.status == "interrupted" and name in after.error


def test_recorded_heartbeats_while_the_block_runs():
    store = Store(Path("h.db"))
    run = store.create_run(kind="eval", config={}, status="running")
    first = store.get_run(run.id).heartbeat_at
    with recorded(store, run.id, heartbeat_s=0.05):
        time.sleep(0.4)
        during = store.get_run(run.id).heartbeat_at
    assert during > first
    assert store.get_run(run.id).status == "completed"


def test_train_log_to_a_file_has_one_line_per_epoch(tmp_path):
    """Off a terminal: no bars, no blank lines, one line per epoch with its numbers, nothing wrapped."""
    save = tmp_path / ("a_rather_long_folder_name_" * 4)
    log = tmp_path / "train.log"
    with open(log, "w") as err:
        done = subprocess.run([*train_args(2), "--save", str(save)], cwd=tmp_path, env=_env(tmp_path),
                              stdout=subprocess.DEVNULL, stderr=err, timeout=300)
    lines = log.read_text().split("\n")
    assert done.returncode == 0, lines[-20:]
    assert lines[-1] == "" and "" not in lines[:-1]  # no blank lines
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.split()[1] for e in epochs] == ["1/3", "2/3", "3/3"]
    assert all("train_loss" in e and "val_miou" in e for e in epochs)
    (run,) = Store(tmp_path / "r.db").list_runs(kind="train")
    assert any(str(save / run.id) in line for line in lines)  # the long path is on one line
    assert "\x1b" not in log.read_text()
    assert file_sha256(save / run.id / "best.pt")
