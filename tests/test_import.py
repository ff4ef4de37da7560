"""`vss import`: research-repo checkpoints become vss checkpoints (strict, identical outputs)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.data import get_spec
from vss_cli.models import build_model
from vss_cli.pruning.checkpoint import load_checkpoint
from vss_cli.store import Store

runner = CliRunner()
WIDTH = 0.125


def vss(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def research_model():
    torch.manual_seed(0)
    model = build_model("unet", get_spec("synthetic").num_classes, width=WIDTH).eval()
    for p in model.parameters():  # not the init a fresh build would give
        p.data.add_(0.01 * torch.randn_like(p))
    return model


def _import(path, *extra):
    before = {r.id for r in Store("vss.db").list_runs(kind="import")}
    result = vss("import", str(path), "--model", "unet", "--width", str(WIDTH), *extra)
    assert result.exit_code == 0, result.output
    (run,) = [r for r in Store("vss.db").list_runs(kind="import") if r.id not in before]
    return run


def test_plain_and_wrapped_state_dicts_import_to_identical_models(research_model, tmp_path):
    state = research_model.state_dict()
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pth"
    torch.save(state, plain)
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    runs = [_import(plain), _import(wrapped)]
    store = Store("vss.db")
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        expected = research_model(x)["out"]
        outs = [load_checkpoint(store.artifact_path(r.id)).model(x)["out"] for r in runs]
    assert torch.equal(outs[0], expected) and torch.equal(outs[1], expected)
    assert [r.config["source_form"] for r in runs] == ["state_dict", "{'state_dict': state_dict}"]
    assert all(r.status == "completed" for r in runs)
    # an imported run is a checkpoint like any other: prune takes its id
    pruned = vss("prune", "--ckpt", runs[0].id, "--method", "l1", "--input-size", "32,48", "--device", "cpu")
    assert pruned.exit_code == 0, pruned.output


def test_pickled_module_needs_trust_pickle(research_model, tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(research_model, path)
    refused = vss("import", str(path), "--model", "unet", "--width", str(WIDTH))
    assert refused.exit_code == 2
    assert "--trust-pickle" in refused.output and "arbitrary" not in refused.output
    assert "runs whatever Python code" in refused.output.replace("\n", " ")
    assert Store("vss.db").list_runs() == []
    run = _import(path, "--trust-pickle")
    assert run.config["source_form"] == "pickled module"


def test_mismatched_keys_are_listed_and_nothing_is_recorded(research_model, tmp_path):
    state = dict(research_model.state_dict())
    extra = state.pop(next(iter(state)))
    state["decoder.extra.weight"] = extra
    path = tmp_path / "bad.pth"
    torch.save({"net": state}, path)
    result = vss("import", str(path), "--model", "unet", "--width", str(WIDTH))
    assert result.exit_code == 2
    text = result.output.replace("\n", "")
    assert "1 missing" in text and "1 unexpected (decoder.extra.weight)" in text
    wrong_width = vss("import", str(tmp_path / "bad.pth"), "--model", "unet")
    assert wrong_width.exit_code == 2 and "mis-shaped" in wrong_width.output.replace("\n", "")
    assert Store("vss.db").list_runs() == []
    assert not list(tmp_path.glob("runs/import/*"))


def test_a_vss_checkpoint_needs_no_import(research_model, tmp_path):
    run = _import(_saved(research_model, tmp_path))
    again = vss("import", str(Store("vss.db").artifact_path(run.id)), "--model", "unet")
    assert again.exit_code == 2 and "already a vss checkpoint" in again.output


def _saved(model, tmp_path):
    path = tmp_path / "m.pth"
    torch.save(model.state_dict(), path)
    return path
