"""Faults on the process side (issue 22): a stop signal in the middle of a checkpoint write, a full
disk, text that looks like Rich markup, bad input found only after loading, secrets on disk."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tests.cli_run import vss
from vss_cli import signals
from vss_cli.engine.checkpoint import ModelSpec, read_checkpoint, save_checkpoint
from vss_cli.errors import DiskFull, Interrupted
from vss_cli.pruning.checkpoint import load_checkpoint
from vss_cli.store import Store

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--epochs", "3", "--width", "0.125", "--input-size", "32,48", "--batch-size", "8",
         "--max-iters-per-epoch", "2", "--device", "cpu"]

# A child `vss` whose N-th write of a checkpoint named SLOW_NAME stalls after its first chunk and
# touches SLOW_MARKER, so the test can signal it at exactly that moment (mid-write).
SLOW_WRITER = """
import os, sys, time
from pathlib import Path
import torch
import vss_cli.engine.checkpoint as ck
from vss_cli.fileio import atomic_output

name, nth, marker = os.environ["SLOW_NAME"], int(os.environ["SLOW_NTH"]), os.environ["SLOW_MARKER"]
seen = [0]

class Stalling:
    def __init__(self, f):
        self.f, self.first = f, True
    def write(self, b):
        n = self.f.write(b)
        if self.first:
            self.first = False
            Path(marker).touch()
            time.sleep(3)
        return n
    def __getattr__(self, key):
        return getattr(self.f, key)

real = ck.atomic_torch_save
def slow(obj, path):
    if Path(path).name == name:
        seen[0] += 1
        if seen[0] == nth:
            with atomic_output(path, "wb") as f:
                torch.save(obj, Stalling(f))
            return Path(path)
    return real(obj, path)
ck.atomic_torch_save = slow

from vss_cli.cli.app import main
sys.argv = ["vss", *sys.argv[1:]]
main()
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "VSS_DB": str(tmp_path / "r.db"), "VSS_QUIET": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **extra}


def _signal_mid_write(tmp_path: Path, args: list[str], name: str, nth: int, signum=signal.SIGTERM):
    """Run `vss args` (slow on the nth write of `name`), send `signum` during that write; (rc, stderr)."""
    marker = tmp_path / "mid-write"
    marker.unlink(missing_ok=True)
    env = _env(tmp_path, SLOW_NAME=name, SLOW_NTH=str(nth), SLOW_MARKER=str(marker))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), proc.communicate()[1][-2000:]
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.fixture(autouse=True)
def _no_stop_left_over():
    """In-process signal tests leave `signals` remembering the stop; later tests start clean."""
    saved = {s: signal.getsignal(getattr(signal, s)) for s in signals.DEFERRED_SIGNALS}
    yield
    signals._received.clear()
    for s, handler in saved.items():
        signal.signal(getattr(signal, s), handler)


def _tiny_checkpoint_args():
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.Conv2d(64, 64, 3))
    return dict(model=model, spec=ModelSpec("x", 2))


class _KillsItselfMidWrite:
    """A file wrapper that sends `signum` to this process after the first chunk is written."""

    def __init__(self, f, signum):
        self.f, self.signum, self.first = f, signum, True

    def write(self, b):
        n = self.f.write(b)
        if self.first:
            self.first = False
            os.kill(os.getpid(), self.signum)
            time.sleep(0.2)  # the handler runs here: without deferral it raises inside torch's writer
        return n

    def __getattr__(self, key):
        return getattr(self.f, key)


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, Interrupted), (signal.SIGINT, KeyboardInterrupt)])
def test_a_stop_signal_during_a_checkpoint_write_waits_for_the_complete_file(tmp_path, monkeypatch, signum, raised):
    signals.install_signal_handlers()
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: real_save(obj, _KillsItselfMidWrite(f, signum)))
    with pytest.raises(raised) as caught:
        save_checkpoint(tmp_path / "last.pt", **_tiny_checkpoint_args())
    assert not isinstance(caught.value.__context__, RuntimeError)  # not "unexpected pos" from torch
    assert read_checkpoint(tmp_path / "last.pt")["format"]  # complete: it loads
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left
    assert signals.stop_requested() is not None


def test_a_full_disk_names_the_path_and_leaves_no_file(tmp_path, monkeypatch):
    real_save = torch.save

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, key):
            return getattr(self.f, key)

    monkeypatch.setattr(torch, "save", lambda obj, f: real_save(obj, Full(f)))
    with pytest.raises(DiskFull) as caught:
        save_checkpoint(tmp_path / "best.pt", **_tiny_checkpoint_args())
    assert str(caught.value).startswith(f"disk full: {tmp_path / 'best.pt'}")
    assert list(tmp_path.iterdir()) == []


def test_sigterm_while_last_pt_is_written_ends_interrupted_and_resumes_from_it(tmp_path):
    """The second epoch's last.pt is being written when SIGTERM comes: the write completes, the run ends
    interrupted with 143, and --resume continues from that last.pt (epoch 3 only)."""
    rc, err = _signal_mid_write(tmp_path, TRAIN, "last.pt", 2)
    assert rc == 143, err[-2000:]
    assert "Traceback" not in err and "unexpected pos" not in err
    store = Store(tmp_path / "r.db")
    (run,) = store.list_runs(kind="train")
    assert run.status == "interrupted" and "SIGTERM" in run.error
    last = Path(run.out_dir) / "last.pt"
    assert load_checkpoint(last).extra["epoch"] == 1
    assert not [p for p in Path(run.out_dir).iterdir() if p.suffix == ".tmp"]
    done = subprocess.run([sys.executable, "-m", "vss_cli", *TRAIN, "--resume"], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    store = Store(tmp_path / "r.db")
    assert store.get_run(run.id).status == "completed"
    steps = [m.step for m in store.metrics(run.id, "train_loss")]
    assert sorted(steps) == [0, 1, 2]  # epoch 3 alone was trained again: nothing twice


@pytest.mark.heavy  # the SIGTERM case above runs the same path; Ctrl-C's deferral is tested in-process
def test_sigint_while_last_pt_is_written_exits_130_interrupted(tmp_path):
    rc, err = _signal_mid_write(tmp_path, TRAIN, "last.pt", 1, signal.SIGINT)
    assert rc == 130, err[-2000:]
    (run,) = Store(tmp_path / "r.db").list_runs(kind="train")
    assert run.status == "interrupted"
    assert load_checkpoint(Path(run.out_dir) / "last.pt").extra["epoch"] == 0


def test_after_sigterm_a_bench_worker_takes_no_new_cell(tmp_path):
    """SIGTERM while the first cell's pruned.pt is written: that cell ends interrupted and no other
    cell is started (before: the write failed, the cell was recorded failed and the worker went on)."""
    base = tmp_path / "base.pt"
    from vss_cli.data import get_spec
    from vss_cli.models import build_model

    spec = get_spec("synthetic")
    save_checkpoint(base, model=build_model("unet", spec.num_classes, width=0.125),
                    spec=ModelSpec("unet", spec.num_classes, {"width": 0.125}), dataset=spec.to_dict())
    args = ["bench", "--baseline", str(base), "--methods", "l1", "--ratios", "0.3,0.5", "--input-size", "32,48",
            "--samples", "4", "--speed-iters", "2", "--warmup", "1", "--finetune-epochs", "0",
            "--out-dir", str(tmp_path / "grid")]
    rc, err = _signal_mid_write(tmp_path, args, "pruned.pt", 1)
    assert rc == 143, err[-2000:]
    store = Store(tmp_path / "r.db")
    cells = sorted(store.list_runs(kind="cell"), key=lambda c: c.attempt, reverse=True)
    assert [c.status for c in cells] == ["interrupted", "pending"]
    (prune,) = store.list_runs(kind="prune")
    assert prune.status == "interrupted"
    assert load_checkpoint(Path(prune.out_dir) / "pruned.pt")  # the write that was under way completed


def _cli(args: list[str]):
    return vss(*args)


TINY_TRAIN = ["train", "--epochs", "1", "--width", "0.125", "--input-size", "32,48", "--batch-size", "8",
              "--max-iters-per-epoch", "1", "--device", "cpu"]


def test_a_full_disk_during_training_fails_the_run_in_one_line_with_no_artifact(tmp_path, monkeypatch):
    real_save = torch.save

    def full(obj, f):
        class Full:
            def write(self, b):
                raise OSError(errno.ENOSPC, "No space left on device")

            def __getattr__(self, key):
                return getattr(f, key)

        return real_save(obj, Full())

    monkeypatch.setattr(torch, "save", full)
    result = _cli([*TINY_TRAIN, "--save", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("failed: disk full: ") and str(tmp_path / "out") in line and "unexpected pos" not in line
    store = Store(os.environ["VSS_DB"])
    (run,) = store.list_runs(kind="train")
    assert run.status == "failed" and "disk full" in run.error
    assert store.artifacts(run.id) == []
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_brackets_in_user_text_are_printed_as_text(tmp_path):
    shown = _cli(["runs", "show", "abc[/red]"])
    assert shown.exit_code == 2 and "Traceback" not in shown.output
    assert shown.output.strip() == "error: no run matches 'abc[/red]': see `vss runs list`"
    trained = _cli([*TINY_TRAIN, "--save", "ckpt [v1]"])
    assert trained.exit_code == 0, trained.output
    assert f"-> ckpt [v1]{os.sep}" in trained.output


def _fake_torchrun(monkeypatch, script: str, *args: str) -> None:
    import vss_cli.workflows.bench_ddp as ddp

    monkeypatch.setattr(ddp, "torchrun_command", lambda nproc, job: [sys.executable, "-c", script, str(job), *args])


def test_the_database_password_reaches_torchrun_workers_only_through_their_environment(tmp_path, monkeypatch):
    """`--nproc-per-cell 2` on PostgreSQL: before, the URL with its password was written to
    cells/<cell>/ddp/ddp_job.json and stayed there."""
    import vss_cli.workflows.bench_ddp as ddp
    from vss_cli.workflows.options import TrainOptions

    secret = "s3cr3t-pw"
    url = f"postgresql://vss:{secret}@db.example:5432/vss"
    assert all(secret not in part for part in ddp.torchrun_command(2, tmp_path / "ddp" / "ddp_job.json"))
    _fake_torchrun(monkeypatch, "import json, os, sys, pathlib\n"
                   "job = json.loads(pathlib.Path(sys.argv[1]).read_text())\n"
                   "ok = os.environ.get('VSS_DB') == sys.argv[2]\n"
                   "pathlib.Path(job['result']).write_text('run-1' if ok else 'no VSS_DB')", url)
    run_id = ddp.finetune_under_torchrun(TrainOptions(epochs=1), db_url=url, cell_id="c1", nproc=2,
                                         job_dir=tmp_path / "ddp")
    assert run_id == "run-1"  # the workers found the URL in their environment
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(secret not in p.read_text() for p in written)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("VSS_DB")
    with pytest.raises(Exception, match="VSS_DB"):
        ddp.main(str(tmp_path / "ddp" / "ddp_job.json"))


def test_a_stopped_bench_stops_its_torchrun_workers(tmp_path, monkeypatch):
    """SIGTERM to the bench process alone (not its process group) while torchrun runs: torchrun gets
    SIGTERM too (before, it was SIGKILLed and its workers were left running)."""
    import threading

    import vss_cli.workflows.bench_ddp as ddp
    from vss_cli.workflows.options import TrainOptions

    started, stopped = tmp_path / "started", tmp_path / "stopped"
    _fake_torchrun(monkeypatch, "import signal, sys, time, pathlib\n"
                   "def stop(*_):\n    pathlib.Path(sys.argv[3]).touch(); sys.exit(143)\n"
                   "signal.signal(signal.SIGTERM, stop)\n"
                   "pathlib.Path(sys.argv[2]).touch()\n"
                   "time.sleep(60)", str(started), str(stopped))

    def signal_once_started():
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    signals.install_signal_handlers()
    threading.Thread(target=signal_once_started, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        ddp.finetune_under_torchrun(TrainOptions(epochs=1), db_url="sqlite:///x.db", cell_id="c1", nproc=2,
                                    job_dir=tmp_path / "ddp")
    assert stopped.exists() and time.monotonic() - t0 < 30


def test_a_run_failed_on_a_full_disk_resumes_from_its_last_complete_checkpoint(tmp_path, monkeypatch):
    import vss_cli.engine.checkpoint as ck

    real_atomic, real_save, last_saves = ck.atomic_torch_save, torch.save, []

    def full_on_the_second_last_pt(obj, path):
        last_saves.extend([1] if Path(path).name == "last.pt" else [])
        if len(last_saves) == 2 and Path(path).name == "last.pt":
            def full(_obj, f):
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr(torch, "save", full)
        try:
            return real_atomic(obj, path)
        finally:
            monkeypatch.setattr(torch, "save", real_save)

    args = [*TINY_TRAIN[:1], "--epochs", "3", *TINY_TRAIN[3:]]
    monkeypatch.setattr(ck, "atomic_torch_save", full_on_the_second_last_pt)
    failed = _cli(args)
    assert failed.exit_code == 1 and "disk full" in failed.output, failed.output
    monkeypatch.setattr(ck, "atomic_torch_save", real_atomic)
    store = Store(os.environ["VSS_DB"])
    (run,) = store.list_runs(kind="train")
    assert run.status == "failed" and load_checkpoint(Path(run.out_dir) / "last.pt").extra["epoch"] == 0
    resumed = _cli([*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert [r.id for r in store.list_runs(kind="train")] == [run.id] and store.get_run(run.id).status == "completed"
    assert sorted(m.step for m in store.metrics(run.id, "train_loss")) == [0, 1, 2]


def test_a_cell_failure_caused_by_a_stop_signal_interrupts_the_grid(tmp_path, tiny_baseline, monkeypatch):
    """A signal that surfaces as another exception (torch wraps what a callback raised) still stops the
    worker: the cell ends interrupted, not failed, and no further cell is taken."""
    import vss_cli.workflows.bench_cells as bench_cells

    def signalled_prune(*_a, **_k):
        signals._received.append(signal.SIGTERM)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2383616 vs 2383512")

    monkeypatch.setattr(bench_cells, "prune_run", signalled_prune)
    result = _cli(["bench", "--baseline", str(tiny_baseline), "--methods", "l1", "--ratios", "0.3,0.5",
                   "--input-size", "32,48", "--finetune-epochs", "0", "--out-dir", "grid"])
    assert result.exit_code == 143, result.output
    store = Store(os.environ["VSS_DB"])
    assert sorted(c.status for c in store.list_runs(kind="cell")) == ["interrupted", "pending"]
    (bench,) = store.list_runs(kind="bench")
    assert bench.status == "interrupted" and "SIGTERM" in bench.error


def test_no_file_vss_writes_holds_the_database_password(tmp_path, pg_url):
    """End to end on PostgreSQL with two torchrun workers: no file under the grid and nothing printed
    holds the password (the printed rerun command showed it before)."""
    secret = "pw-" + os.urandom(4).hex()
    scheme, rest = pg_url.split("://", 1)
    user, host = rest.split("@", 1)
    url = f"{scheme}://{user.split(':')[0]}:{secret}@{host}"  # the test server trusts, so any password works
    from vss_cli.data import get_spec
    from vss_cli.models import build_model

    spec = get_spec("synthetic")
    base = save_checkpoint(tmp_path / "base.pt", model=build_model("unet", spec.num_classes, width=0.125),
                           spec=ModelSpec("unet", spec.num_classes, {"width": 0.125}), dataset=spec.to_dict())
    result = _cli(["--db", url, "bench", "--baseline", str(base), "--methods", "l1", "--ratios", "0.3",
                   "--input-size", "32,48", "--batch-size", "8", "--samples", "0", "--speed-iters", "1",
                   "--warmup", "0", "--finetune-epochs", "1", "--max-iters-per-epoch", "1", "--nproc-per-cell", "2",
                   "--device", "cpu", "--out-dir", str(tmp_path / "grid")])
    assert result.exit_code == 0, result.output
    assert secret not in result.output
    assert list((tmp_path / "grid").rglob("ddp_job.json"))
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaks == []
