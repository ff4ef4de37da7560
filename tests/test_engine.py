"""The one training loop: slimming regularizer, resume, checkpoints of pruned models, torchrun."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from vss_cli.engine.checkpoint import ModelSpec, save_checkpoint
from vss_cli.engine.train import TrainConfig, TrainHooks, fit
from vss_cli.models import build_model
from vss_cli.pruning.checkpoint import load_checkpoint
from vss_cli.pruning.methods.slimming import slimming_regularizer
from vss_cli.pruning.registry import get_method
from vss_cli.workflows.prune import PruneOptions, prune_model


def _unet():
    torch.manual_seed(0)
    return build_model("unet", 5, width=0.125)


def _gamma_l1(model: nn.Module) -> float:
    return sum(float(m.weight.abs().sum()) for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_slimming_lambda_lowers_gamma_l1(tiny_batches):
    results = []
    for lam in (0.0, 1e-2):
        model = _unet()
        cfg = TrainConfig(epochs=2, lr=0.05, seed=0)
        hooks = TrainHooks(regularize=slimming_regularizer(lam)) if lam else None
        fit(model, tiny_batches, None, cfg, num_classes=5, hooks=hooks, show_progress=False)
        results.append(_gamma_l1(model))
    assert results[1] < results[0]


def test_resume_continues_at_the_right_epoch_and_lr(tiny_batches, tmp_path):
    spec = ModelSpec("unet", 5, {"width": 0.125})
    cfg = TrainConfig(epochs=4, lr=0.05, seed=0)
    full = _unet()
    straight = fit(full, tiny_batches, tiny_batches, cfg, num_classes=5, spec=spec, out_dir=tmp_path / "a",
                   show_progress=False)

    class Stop(Exception):
        pass

    def stop_after_second(epoch, _scalars):
        if epoch == 1:
            raise Stop

    cut = _unet()
    with pytest.raises(Stop):
        fit(cut, tiny_batches, tiny_batches, cfg, num_classes=5, spec=spec, out_dir=tmp_path / "b",
            hooks=TrainHooks(on_epoch_end=stop_after_second), show_progress=False)
    seen = []
    resumed = _unet()
    result = fit(resumed, tiny_batches, tiny_batches, cfg, num_classes=5, spec=spec, out_dir=tmp_path / "b",
                 resume_from=tmp_path / "b" / "last.pt", show_progress=False,
                 hooks=TrainHooks(on_epoch_end=lambda e, s: seen.append((e, s["lr"]))))
    assert [e for e, _ in seen] == [2, 3]
    assert seen[0][1] == pytest.approx(straight.history[2]["lr"], rel=1e-12)
    assert result.last_epoch == 3
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_pruned_checkpoint_reloads_bit_identically(tmp_path):
    model = _unet().eval()
    spec = ModelSpec("unet", 5, {"width": 0.125})
    opts = PruneOptions(ckpt="-", method="l1", global_ratio=0.3, round_to=1)
    from vss_cli.engine.complexity import count_complexity

    _, history = prune_model(model, "unet", get_method("l1"), opts, input_size=(32, 32), device="cpu",
                             batch_source=None, fit=None, num_classes=5, ignore_index=255,
                             count=lambda m: count_complexity(m, (32, 32)))
    path = save_checkpoint(tmp_path / "p.pt", model=model, spec=spec, history=history)
    raw = torch.load(path, weights_only=True)
    assert raw["pruning_history"] and raw["format"].startswith("vss-checkpoint")
    loaded = load_checkpoint(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(x)["out"] - loaded.model(x)["out"]).abs().max().item() == 0.0


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_torchrun_two_cpu_processes_give_one_run(tmp_path):
    env = {**os.environ, "VSS_DB": str(tmp_path / "ddp.db"), "VSS_QUIET": "1", "OMP_NUM_THREADS": "1"}
    cmd = ["torchrun", "--nproc_per_node", "2", "--master_port", "29517", "-m", "vss_cli", "train", "--epochs", "1",
           "--width", "0.125", "--input-size", "32,48", "--batch-size", "4", "--max-iters-per-epoch", "2",
           "--device", "cpu", "--save", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from vss_cli.store import Store

    runs = Store(tmp_path / "ddp.db").list_runs(kind="train")
    assert len(runs) == 1 and runs[0].status == "completed"
    assert runs[0].config.get("world_size") == 2
    run_dir = tmp_path / "ddp" / runs[0].id  # --save DIR holds one folder per run
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "last.pt"]
    assert sys.executable


def test_killed_training_resumes_in_the_same_run(tmp_path):
    """SIGKILL after the first epoch's last.pt, then `vss train --resume`: the same run finishes."""
    import signal
    import time

    from vss_cli.store import Store

    env = {**os.environ, "VSS_DB": str(tmp_path / "r.db"), "VSS_QUIET": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "vss_cli", "train", "--epochs", "3", "--width", "0.125", "--input-size", "32,48",
            "--batch-size", "8", "--max-iters-per-epoch", "25", "--device", "cpu"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("runs/train/*/last.pt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run,) = Store(tmp_path / "r.db").list_runs(kind="train")
    assert run.status == "running"  # killed: nothing marked it otherwise
    done = subprocess.run([*args, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    store = Store(tmp_path / "r.db")
    (again,) = store.list_runs(kind="train")
    assert again.id == run.id and again.status == "completed" and again.attempt == 2
    epochs = sorted({m.step for m in store.metrics(run.id, "train_loss")})
    assert epochs == [0, 1, 2]


def test_epoch_seconds_is_per_epoch_and_elapsed_is_cumulative(tiny_batches):
    result = fit(_unet(), tiny_batches, None, TrainConfig(epochs=3, lr=0.05, seed=0), num_classes=5,
                 show_progress=False)
    per_epoch = [h["epoch_seconds"] for h in result.history]
    elapsed = [h["elapsed_seconds"] for h in result.history]
    assert elapsed == sorted(elapsed) and elapsed[-1] >= sum(per_epoch) * 0.999
    assert all(0 < s <= e for s, e in zip(per_epoch, elapsed, strict=True))
    assert per_epoch[-1] < elapsed[-1]  # not cumulative
