"""`vss export`: a pruned, BN-folded model as ONNX (checked with onnxruntime) or TorchScript, recorded as a run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.test_speed import _random_bn
from vss_cli.cli.app import app
from vss_cli.data import get_spec
from vss_cli.engine.checkpoint import ModelSpec, save_checkpoint
from vss_cli.models import build_model
from vss_cli.pruning.checkpoint import load_checkpoint
from vss_cli.store import Store

runner = CliRunner()


@pytest.fixture
def pruned_run(tmp_path) -> str:
    spec = get_spec("synthetic")
    torch.manual_seed(0)
    model = _random_bn(build_model("unet", spec.num_classes, width=0.125))
    base = save_checkpoint(tmp_path / "base.pt", model=model, spec=ModelSpec("unet", spec.num_classes, {"width": 0.125}),
                           dataset=spec.to_dict())
    result = runner.invoke(app, ["--threads", "1", "prune", "--ckpt", str(base), "--global-ratio", "0.4",
                                 "--input-size", "32,32", "--samples", "0", "--speed-check-iters", "0"])
    assert result.exit_code == 0, result.output
    (run,) = Store(os.environ["VSS_DB"]).list_runs(kind="prune")
    return run.id


def _torch_out(store: Store, run_id: str, x: torch.Tensor) -> np.ndarray:
    loaded = load_checkpoint(store.artifact_path(run_id, kind="checkpoint"))
    with torch.no_grad():
        return loaded.model.eval()(x)["out"].numpy()


def test_onnx_export_matches_torch_in_onnxruntime_and_is_recorded(pruned_run):
    ort = pytest.importorskip("onnxruntime")
    result = runner.invoke(app, ["export", pruned_run, "--format", "onnx", "--out", "m/pruned.onnx",
                                 "--input-size", "32,32"])
    assert result.exit_code == 0, result.output
    store = Store(os.environ["VSS_DB"])
    (run,) = store.list_runs(kind="export")
    assert run.status == "completed" and [(rel, p.id) for rel, p in store.parents(run.id)] == [
        ("exported-from", pruned_run)]
    path = store.artifact_path(run.id, kind="export")
    assert Path(path).resolve() == Path("m/pruned.onnx").resolve()
    x = torch.randn(3, 3, 32, 32)  # another batch size: the batch axis is dynamic
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    assert np.abs(got - _torch_out(store, pruned_run, x)).max() <= 1e-4
    import onnx

    graph = onnx.load(str(path)).graph
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]  # folded
    m = store.latest_metrics(run.id)
    assert m["max_abs_diff"] <= 1e-4 and m["bn_folded"] == 18


def test_torchscript_export_matches_torch(pruned_run):
    result = runner.invoke(app, ["export", pruned_run, "--format", "torchscript", "--input-size", "32,32"])
    assert result.exit_code == 0, result.output
    store = Store(os.environ["VSS_DB"])
    (run,) = store.list_runs(kind="export")
    path = store.artifact_path(run.id, kind="export")
    assert path.name == "model.pt" and run.id in str(path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        got = torch.jit.load(str(path))(x).numpy()
    assert np.abs(got - _torch_out(store, pruned_run, x)).max() <= 1e-4


def test_an_unknown_format_is_bad_input_and_records_nothing(pruned_run):
    result = runner.invoke(app, ["export", pruned_run, "--format", "tflite"])
    assert result.exit_code == 2 and "onnx or torchscript" in result.output
    assert Store(os.environ["VSS_DB"]).list_runs(kind="export") == []


def test_export_never_overwrites_another_runs_file(pruned_run):
    store = Store(os.environ["VSS_DB"])
    ckpt = store.artifact_path(pruned_run, kind="checkpoint")
    before = Path(ckpt).read_bytes()
    result = runner.invoke(app, ["export", pruned_run, "--format", "torchscript", "--out", str(ckpt)])
    assert result.exit_code == 2 and "belongs to run" in result.output
    assert Path(ckpt).read_bytes() == before and store.list_runs(kind="export") == []
