"""`vss eval`: self-evaluation identities, the seed report's keys, lineage, bad input, and speed timing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.engine.checkpoint import ModelSpec, save_checkpoint
from vss_cli.engine.speed import measure_speed_pair, speedups
from vss_cli.errors import ConfigError
from vss_cli.models import build_model
from vss_cli.store import Store
from vss_cli.workflows.evaluate import EvalOptions, eval_run

torch.set_num_threads(1)

SIZE = (32, 32)
SIZE_ARG = "32,32"
runner = CliRunner()

# every key the seed guide's report examples show, as (path ...) tuples
SEED_KEYS = [
    ("candidate_results", "mIoU"), ("candidate_results", "Pixel_Accuracy"), ("candidate_results", "Mean_Accuracy"),
    ("candidate_results", "Frequency_Weighted_IoU"), ("baseline_results", "mIoU"), ("miou_retention",),
    ("pixel_accuracy_retention",), ("baseline_speed", "fps"), ("baseline_speed", "avg_ms_per_iter"),
    ("candidate_speed", "fps"), ("candidate_speed", "avg_ms_per_iter"), ("speedup_latency",), ("speedup_fps",),
    ("baseline_flops_params", "FLOPs"), ("baseline_flops_params", "Params"), ("candidate_flops_params", "FLOPs"),
    ("candidate_flops_params", "Params"), ("pruning_ratios", "channel_prune_ratio"),
    ("pruning_ratios", "channels_before"), ("pruning_ratios", "channels_after"),
]


def read_key(report: dict, path: tuple[str, ...]):
    for key in path:
        report = report[key]
    return report


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tiny_pruned_unet) -> dict[str, Path]:
    """A tiny random-init U-Net on the synthetic dataset and an l1-pruned copy (30%)."""
    root = tmp_path_factory.mktemp("ckpts")
    model, pruned, mspec, history, spec = tiny_pruned_unet(0.3, SIZE)
    kw = mspec.kwargs
    base = save_checkpoint(root / "base.pt", model=model, spec=mspec, dataset=spec.to_dict())
    cand = save_checkpoint(root / "pruned.pt", model=pruned, spec=mspec, history=history, dataset=spec.to_dict(),
                           extra={"method": "l1", "global_ratio": 0.3})
    finetuned = save_checkpoint(root / "finetuned.pt", model=pruned, spec=mspec, history=history,
                                dataset=spec.to_dict(), extra={"epoch": 0})
    other = save_checkpoint(root / "five.pt", model=build_model("unet", 5, **kw), spec=ModelSpec("unet", 5, kw),
                            dataset=spec.to_dict())
    return {"base": base, "pruned": cand, "finetuned": finetuned, "five_classes": other}


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "vss.db"
    monkeypatch.setenv("VSS_DB", str(path))
    monkeypatch.setenv("VSS_QUIET", "1")
    monkeypatch.chdir(tmp_path)
    return path


def test_model_against_itself(ckpts, db, tmp_path):
    with Store(db) as store:
        out = eval_run(EvalOptions(baseline=str(ckpts["base"]), candidate=str(ckpts["base"]), input_size=SIZE,
                                   speed_iters=100, warmup=5, reconstruction_batches=2), store)
        metrics = {m.key: m.value for m in store.metrics(out.run_id)}
        artifacts = {a.kind for a in store.artifacts(out.run_id)}
        assert store.get_run(out.run_id).status == "completed"
    report = json.loads(out.report_path.read_text())
    assert out.report_path == tmp_path / "runs" / "eval" / out.run_id / "evaluation_report.json"
    assert report["miou_retention"] == 1.0 and report["pixel_accuracy_retention"] == 1.0
    assert report["reconstruction_mse"] == 0.0
    assert report["pruning_ratios"] == {"channel_prune_ratio": 0.0, "channels_before": 736, "channels_after": 736}
    assert report["speedup_latency"] > 0  # near 1 on a quiet machine; how near depends on load, so not asserted
    assert report["speedup_fps"] == pytest.approx(report["speedup_latency"])
    assert report["oracle_analysis"] is None
    for path in SEED_KEYS:
        read_key(report, path)
    assert metrics["miou_retention"] == 1.0 and metrics["channel_prune_ratio"] == 0.0
    assert metrics["reconstruction_mse"] == 0.0 and metrics["macs_reduction"] == 0.0
    assert {"candidate_miou", "baseline_fps", "speedup_latency", "candidate_macs"} <= set(metrics)
    assert artifacts == {"report", "confusion"}
    confusion = json.loads((out.out_dir / "candidate_confusion.json").read_text())
    assert sum(map(sum, confusion["matrix"])) == report["candidate_results"]["pixels"] <= 64 * 32 * 32


def test_cli_pruned_candidate_with_oracle(ckpts, db, tmp_path):
    report_path = tmp_path / "out" / "evaluation_report.json"
    result = runner.invoke(app, [
        "eval", "--baseline", str(ckpts["base"]), "--candidate", str(ckpts["pruned"]), "--report", str(report_path),
        "--input-size", SIZE_ARG, "--speed-iters", "5", "--warmup", "1", "--oracle-samples", "4",
        "--oracle-layers", "2",
    ])
    assert result.exit_code == 0, result.output
    assert "mIoU retention" in result.stdout and "oracle: l1" in result.stdout
    report = json.loads(report_path.read_text())
    for path in SEED_KEYS:
        read_key(report, path)
    assert isinstance(report["candidate_flops_params"]["FLOPs"], str)
    assert report["candidate_flops_params"]["flops"] == 2 * report["candidate_flops_params"]["macs"]
    assert report["candidate_flops_params"]["macs"] < report["baseline_flops_params"]["macs"]
    ratios = report["pruning_ratios"]
    assert ratios["channels_after"] < ratios["channels_before"]
    assert ratios["channel_prune_ratio"] == pytest.approx(1 - ratios["channels_after"] / ratios["channels_before"])
    assert report["reconstruction_mse"] > 0
    oracle = report["oracle_analysis"]
    assert list(oracle["methods"]) == ["l1"] and len(oracle["layers"]) == 2
    assert len(oracle["methods"]["l1"]["layers"]) == 2 and -1 <= oracle["methods"]["l1"]["spearman"] <= 1
    # one batch: the base loss, then per layer a dependency trace, one capture and one replay per 8 channels
    assert oracle["forward_passes"] == 1 + sum(2 + -(-layer["channels"] // 8) for layer in oracle["layers"])
    assert 0 < oracle["oracle_seconds"] <= oracle["seconds"]
    with Store(db) as store:
        (run,) = store.list_runs(kind="eval")
        assert store.latest_metrics(run.id)["oracle_l1_spearman"] == oracle["methods"]["l1"]["spearman"]


def test_run_ids_give_lineage_edges_and_the_method_from_the_prune_run(ckpts, db):
    with Store(db) as store:
        train = store.create_run(kind="train", config={"model": "unet"}, status="completed")
        store.add_artifact(train.id, kind="checkpoint", path=ckpts["base"])
        prune = store.create_run(kind="prune", config={"method": "l1"}, parents=[(train.id, "pruned-from")],
                                 status="completed")
        store.add_artifact(prune.id, kind="checkpoint", path=ckpts["pruned"])
        finetune = store.create_run(kind="finetune", config={}, parents=[(prune.id, "finetuned-from")],
                                    status="completed")
        store.add_artifact(finetune.id, kind="checkpoint", path=ckpts["finetuned"])  # its extra has no method
        out = eval_run(EvalOptions(baseline=train.id, candidate=finetune.id, input_size=SIZE, speed_iters=2,
                                   warmup=0, oracle_samples=2, oracle_layers=1, reconstruction_batches=1), store)
        parents = [(relation, run.id) for relation, run in store.parents(out.run_id)]
    assert parents == [("baseline-of", train.id), ("evaluates", finetune.id)]
    assert list(out.report.oracle_analysis["methods"]) == ["l1"]


@pytest.mark.parametrize("args, message", [
    (["--baseline", "missing.pt"], "does not exist"),
    (["--candidate", "0123deadbeef"], "neither a checkpoint file nor a run id"),
    (["--candidate", "{five_classes}"], "predicts 8 classes"),
    (["--dtype", "fp16", "--device", "cpu"], "use bf16 or fp32 on CPU"),
    (["--oracle-methods", "some"], "use candidate or all"),
])
def test_bad_input_exits_2_with_one_line_and_no_run(ckpts, db, args, message):
    base = ["--baseline", str(ckpts["base"]), "--candidate", str(ckpts["pruned"])]
    args = [a.format(**{k: str(v) for k, v in ckpts.items()}) for a in args]
    opts = dict(zip(base[::2], base[1::2], strict=True))
    opts.update(dict(zip(args[::2], args[1::2], strict=True)))
    result = runner.invoke(app, ["eval", *[x for kv in opts.items() for x in kv], "--input-size", SIZE_ARG])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with Store(db) as store:
        assert store.list_runs(kind="eval") == []


# ----------------------------------------------------------------------------------------------
# speed


class WithAux(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.aux_classifier = nn.Conv2d(4, 2, 1)
        self.aux_calls = 0

    def forward(self, x):
        out = {"out": self.body(x)}
        if self.aux_classifier is not None:
            self.aux_calls += 1
            out["aux"] = self.aux_classifier(out["out"])
        return out


def test_speed_pair_times_the_inference_graph_and_restores_the_aux_head():
    a, b = WithAux().train(), WithAux()
    aux = a.aux_classifier
    base, cand = measure_speed_pair(a, b, input_size=(16, 16), batch=2, device="cpu", warmup=2, iters=6)
    assert a.aux_classifier is aux and a.training and a.aux_calls == 0 and b.aux_calls == 0
    for r in (base, cand):
        assert r.iterations == 6 and r.warmup == 2 and r.batch == 2 and r.input_size == (16, 16)
        assert r.min_ms <= r.median_ms <= r.max_ms
        assert r.fps == pytest.approx(2 * 1000 / r.median_ms)
        assert r.pixels_per_second == pytest.approx(r.fps * 256)
        assert r.dtype == "fp32" and r.device.startswith("cpu")
    ups = speedups(base, cand)
    paired = sorted(x / y for x, y in zip(base.times_ms, cand.times_ms, strict=True))
    assert ups["speedup_latency"] == ups["speedup_fps"] == pytest.approx((paired[2] + paired[3]) / 2)
    assert ups["speedup_of_medians"] == pytest.approx(base.median_ms / cand.median_ms)
    assert "times_ms" not in base.to_report()


def test_speed_bf16_on_cpu_uses_a_copy_and_fp16_is_refused():
    a, b = WithAux(), WithAux()
    base, _ = measure_speed_pair(a, b, input_size=(8, 8), batch=1, device="cpu", dtype="bf16", warmup=0, iters=2)
    assert base.dtype == "bf16" and a.body.weight.dtype == torch.float32
    with pytest.raises(ConfigError, match="use bf16 or fp32 on CPU"):
        measure_speed_pair(a, b, input_size=(8, 8), batch=1, device="cpu", dtype="fp16")
