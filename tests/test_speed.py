"""Timing as deployed: conv-BN folding on every registered model, median-based labels, the noise flag."""

from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn as nn

from vss_cli.engine.checkpoint import ModelSpec
from vss_cli.engine.fuse import conv_bn_pairs, fold_conv_bn
from vss_cli.engine.speed import SpeedResult, TimingSetup, measure_speed_pair, speedups
from vss_cli.engine.train import evaluate
from vss_cli.errors import ConfigError
from vss_cli.models import build_model, get_model_info, list_models
from vss_cli.pruning.checkpoint import build_from_spec
from vss_cli.pruning.registry import get_method
from vss_cli.workflows.prune import PruneOptions, prune_model


def _random_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model.eval()


def _max_rel_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-6)) for k in a)


@pytest.mark.parametrize("name", list_models())
def test_fold_merges_every_bn_and_keeps_outputs(name):
    torch.manual_seed(0)
    model = _random_bn(build_model(name, 5, **get_model_info(name).tiny_kwargs))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    result = fold_conv_bn(model)
    assert len(result.pairs) == n_bn > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in result.model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn  # the original is untouched
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        assert _max_rel_diff(model(x), result.model(x)) < 1e-4


@pytest.mark.parametrize("name", ["unet", "simple_segnet", "deeplabv3_resnet50"])
def test_fold_works_on_a_pruned_model_rebuilt_from_its_history(name):
    torch.manual_seed(0)
    kw = get_model_info(name).tiny_kwargs
    model = build_model(name, 5, **kw).eval()
    _, history = prune_model(model, name, get_method("l1"), PruneOptions(ckpt="-", global_ratio=0.4, round_to=1),
                             input_size=(32, 32), device="cpu", batch_source=None, fit=None, num_classes=5,
                             ignore_index=255, count=lambda m: type("C", (), {"macs": 0, "params": 0})())
    rebuilt = build_from_spec(ModelSpec(name, 5, kw), history)
    rebuilt.load_state_dict(model.state_dict())
    _random_bn(rebuilt)
    folded = fold_conv_bn(rebuilt).model
    assert len(conv_bn_pairs(rebuilt)) == sum(isinstance(m, nn.BatchNorm2d) for m in rebuilt.modules())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert _max_rel_diff(rebuilt(x), folded(x)) < 1e-4


def test_a_bn_after_a_shared_conv_output_is_not_folded():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return {"out": self.bn(y) + y}  # the conv output also bypasses the BN

    model = _random_bn(Branch())
    assert conv_bn_pairs(model) == []


def test_fused_metrics_equal_unfused(tiny_batches):
    torch.manual_seed(0)
    model = _random_bn(build_model("unet", 5, width=0.125))
    folded = fold_conv_bn(model).model
    plain, _ = evaluate(model, tiny_batches, 5, 255, torch.device("cpu"))
    fused, _ = evaluate(folded, tiny_batches, 5, 255, torch.device("cpu"))
    assert fused.miou == pytest.approx(plain.miou, abs=1e-4)
    assert fused.pixel_accuracy == pytest.approx(plain.pixel_accuracy, abs=1e-4)


def test_fps_and_avg_ms_come_from_the_median_and_the_result_says_how_it_was_timed():
    torch.manual_seed(0)
    a, b = build_model("unet", 5, width=0.125), build_model("unet", 5, width=0.125)
    base, cand = measure_speed_pair(a, b, input_size=(16, 16), batch=3, device="cpu", warmup=1, iters=5)
    for r in (base, cand):
        median = statistics.median(r.times_ms)
        assert r.fps == pytest.approx(3 / (median / 1000.0))
        assert r.avg_ms_per_iter == r.median_ms == median
        assert r.mean_ms_per_iter == pytest.approx(statistics.fmean(r.times_ms))
        assert r.fuse_bn and r.bn_folded == 18 and not r.compiled and not r.cuda_graphs
        assert {"fuse_bn", "bn_folded", "compiled", "cuda_graphs", "mean_ms_per_iter", "spread", "noisy"} <= set(
            r.to_report())
        q1, _, q3 = statistics.quantiles(r.times_ms, n=4, method="inclusive")
        assert r.spread == pytest.approx((q3 - q1) / median) and r.noisy == (r.spread > 0.2)
    plain, _ = measure_speed_pair(a, b, input_size=(16, 16), batch=1, device="cpu",
                                  setup=TimingSetup(fuse_bn=False, warmup=0, iters=1))
    assert not plain.fuse_bn and plain.bn_folded == 0
    with pytest.raises(TypeError, match="not both"):  # one way to say how to time, not two that may disagree
        measure_speed_pair(a, b, input_size=(16, 16), batch=1, device="cpu", iters=1, setup=TimingSetup())


def _result(times: list[float]) -> SpeedResult:
    m = statistics.median(times)
    return SpeedResult(median_ms=m, min_ms=min(times), max_ms=max(times), mean_ms_per_iter=statistics.fmean(times),
                       fps=1000 / m, avg_ms_per_iter=m, pixels_per_second=0.0, iterations=len(times), warmup=0,
                       batch=1, input_size=(8, 8), device="cpu", dtype="fp32", channels_last=False, times_ms=times)


def test_speedup_is_noisy_when_the_paired_ratios_spread_wide():
    base = _result([10.0] * 8)
    steady = speedups(base, _result([5.0, 5.1, 4.9, 5.0, 5.05, 4.95, 5.0, 5.0]))
    assert steady["speedup_latency"] == pytest.approx(2.0) and not steady["speedup_noisy"]
    assert steady["speedup_iqr"] < 0.05
    bursty = speedups(base, _result([5.0, 10.0, 5.0, 10.0, 5.0, 10.0, 5.0, 10.0]))
    ratios = sorted([2.0, 1.0] * 4)
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    assert bursty["speedup_iqr"] == pytest.approx((q3 - q1) / statistics.median(ratios)) and bursty["speedup_noisy"]


def test_cuda_graphs_on_the_cpu_is_refused():
    m = nn.Conv2d(3, 3, 1)
    with pytest.raises(ConfigError, match="--cuda-graphs needs a CUDA device"):
        measure_speed_pair(m, m, input_size=(8, 8), batch=1, device="cpu", cuda_graphs=True)


# ----------------------------------------------------------------------------------------------
# vss prune times the pruned model against its parent


@pytest.fixture
def base_ckpt(tmp_path):
    from vss_cli.data import get_spec
    from vss_cli.engine.checkpoint import save_checkpoint

    spec = get_spec("synthetic")
    torch.manual_seed(0)
    model = build_model("unet", spec.num_classes, width=0.125).eval()
    return save_checkpoint(tmp_path / "base.pt", model=model, spec=ModelSpec("unet", spec.num_classes, {"width": 0.125}),
                           dataset=spec.to_dict())


def _prune(ckpt, *extra):
    from typer.testing import CliRunner

    from vss_cli.cli.app import app

    args = ["--threads", "1", "prune", "--ckpt", str(ckpt), "--global-ratio", "0.5", "--input-size", "32,32",
            "--samples", "0", "--batch-size", "2", "--save", "out", *extra]
    return CliRunner().invoke(app, args)


def test_prune_records_its_speed_against_the_parent(base_ckpt):
    import os

    from vss_cli.store import Store

    result = _prune(base_ckpt, "--speed-check-iters", "6")
    assert result.exit_code == 0, result.output
    (run,) = Store(os.environ["VSS_DB"]).list_runs(kind="prune")
    m = Store(os.environ["VSS_DB"]).latest_metrics(run.id)
    assert m["slower_than_parent"] == float(m["parent_speedup"] <= 1.0)
    assert m["parent_latency_ms"] > 0 and m["pruned_latency_ms"] > 0 and "parent_speedup_noisy" in m


def test_require_speedup_fails_a_slower_prune_and_leaves_no_checkpoint(base_ckpt, monkeypatch):
    import os
    from pathlib import Path

    import vss_cli.engine.speed as speed
    from vss_cli.store import Store

    slow = speed.ParentComparison(speedup=0.93, speedup_iqr=0.05, noisy=False, parent_ms=1.0, child_ms=1.07, iters=4)
    monkeypatch.setattr(speed, "compare_to_parent", lambda *a, **k: slow)
    result = _prune(base_ckpt, "--require-speedup")
    assert result.exit_code == 1, result.output
    assert "x0.930" in result.output and "--require-speedup" in result.output
    (run,) = Store(os.environ["VSS_DB"]).list_runs(kind="prune")
    assert run.status == "failed" and not list(Path(".").rglob("pruned.pt"))
    assert Store(os.environ["VSS_DB"]).artifacts(run.id) == []
    ok = _prune(base_ckpt, "--save", "out2")  # without the flag: a warning, a completed run, the flag metric
    assert ok.exit_code == 0 and list(Path("out2").rglob("pruned.pt"))
    done = [r for r in Store(os.environ["VSS_DB"]).list_runs(kind="prune") if r.status == "completed"]
    assert Store(os.environ["VSS_DB"]).latest_metrics(done[0].id)["slower_than_parent"] == 1.0


def test_require_speedup_without_timing_is_bad_input(base_ckpt):
    result = _prune(base_ckpt, "--require-speedup", "--speed-check-iters", "0")
    assert result.exit_code == 2 and "--speed-check-iters" in result.output


def test_eval_report_says_how_it_timed_and_flags_noise(base_ckpt):
    import json
    import os

    from typer.testing import CliRunner

    from vss_cli.cli.app import app
    from vss_cli.store import Store

    common = ["--threads", "1", "eval", "--baseline", str(base_ckpt), "--candidate", str(base_ckpt), "--input-size",
              "32,32", "--speed-iters", "3", "--warmup", "1", "--batch-size", "2"]
    result = CliRunner().invoke(app, [*common, "--report", "fused.json"])
    assert result.exit_code == 0, result.output
    report = json.load(open("fused.json"))
    speed = report["candidate_speed"]
    assert speed["fuse_bn"] and speed["bn_folded"] == 18 and not speed["compiled"] and not speed["cuda_graphs"]
    assert speed["avg_ms_per_iter"] == speed["median_ms"] and "mean_ms_per_iter" in speed
    assert isinstance(report["speedup_noisy"], bool) and report["speedup_iqr"] >= 0
    (run,) = Store(os.environ["VSS_DB"]).list_runs(kind="eval")
    assert Store(os.environ["VSS_DB"]).latest_metrics(run.id)["speedup_noisy"] == float(report["speedup_noisy"])
    assert "timed as" in result.output
    plain = CliRunner().invoke(app, [*common, "--no-fuse-bn", "--report", "plain.json"])
    assert plain.exit_code == 0 and not json.load(open("plain.json"))["candidate_speed"]["fuse_bn"]
    refused = CliRunner().invoke(app, [*common, "--cuda-graphs", "--device", "cpu"])
    assert refused.exit_code == 2 and "--cuda-graphs needs a CUDA device" in refused.output


@pytest.mark.heavy
def test_compiled_timing_runs_and_says_so():
    """torch.compile on the CPU (minutes on a small machine: C++ codegen)."""
    torch.manual_seed(0)
    model = build_model("unet", 5, width=0.125)
    base, _ = measure_speed_pair(model, model, input_size=(32, 32), batch=1, device="cpu", warmup=2, iters=3,
                                 compile=True)
    assert base.compiled and base.fuse_bn and base.bn_folded == 18 and base.iterations == 3
