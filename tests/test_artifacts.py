"""Artifacts are immutable and verified: run-id folders, no overwriting another run's file, sha256 on resolve."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.errors import CheckpointError, ConfigError
from vss_cli.store import Store, file_sha256
from vss_cli.workflows.common import check_writable
from vss_cli.workflows.paths import missing_hint, resolve_checkpoint

TINY = ["--width", "0.125", "--input-size", "32,48", "--batch-size", "8", "--max-iters-per-epoch", "2",
        "--device", "cpu"]
PRUNE = ["--global-ratio", "0.3", "--input-size", "32,48", "--device", "cpu"]
runner = CliRunner()


def vss(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def trained(tmp_path):
    """A one-epoch tiny U-Net trained through the workflow (the CLI path is test_cli's)."""
    from vss_cli.workflows.train import TrainOptions, train_run

    store = Store(tmp_path / "vss.db")
    opts = TrainOptions(model_kwargs={"width": 0.125}, epochs=1, batch_size=8, input_size=(32, 48),
                        device="cpu", max_iters_per_epoch=2)
    return store, store.get_run(train_run(opts, store).run_id)


def _prune(store, parent, *extra) -> object:
    before = {r.id for r in store.list_runs(kind="prune")}
    result = vss("prune", "--ckpt", parent.id, *PRUNE, *extra)
    assert result.exit_code == 0, result.output
    (run,) = [r for r in store.list_runs(kind="prune") if r.id not in before]
    return run


def test_tampered_checkpoint_is_refused_by_sha256(trained):
    store, train = trained
    prune = _prune(store, train, "--method", "l1")
    pruned = store.artifact_path(prune.id)
    shutil.copyfile(store.artifact_path(train.id), pruned)  # a valid checkpoint, but not the one recorded
    for candidate in (prune.id, str(pruned)):
        result = vss("eval", "--baseline", train.id, "--candidate", candidate, "--input-size", "32,48",
                     "--speed-iters", "2", "--device", "cpu")
        assert result.exit_code == 2, result.output
        assert "sha256" in result.output and prune.id in result.output
    assert store.list_runs(kind="eval") == []


def test_a_file_rewritten_by_another_run_names_both_runs(trained):
    """The FAQ case as an older vss left it: run B wrote its checkpoint over run A's file."""
    store, train = trained
    a = _prune(store, train, "--method", "l1")
    b = _prune(store, train, "--method", "random")
    path = store.artifact_path(a.id)
    shutil.copyfile(store.artifact_path(b.id), path)
    store.add_artifact(b.id, kind="checkpoint", path=path)
    with pytest.raises(CheckpointError) as caught:
        resolve_checkpoint(store, a.id)
    assert a.id in str(caught.value) and b.id in str(caught.value) and "\n" not in str(caught.value)
    assert resolve_checkpoint(store, str(path)).run_id == b.id  # the file is b's now, and intact as b's


def test_shared_save_folder_holds_one_folder_per_run(trained, tmp_path):
    store, train = trained
    shared = tmp_path / "checkpoints"
    first = _prune(store, train, "--method", "l1", "--save", str(shared))
    first_file = shared / first.id / "pruned.pt"
    sha = file_sha256(first_file)
    second = _prune(store, train, "--method", "random", "--save", str(shared))
    assert sorted(p.name for p in shared.iterdir()) == sorted([first.id, second.id])
    assert file_sha256(first_file) == sha
    ref = resolve_checkpoint(store, first.id)
    assert ref.path.resolve() == first_file.resolve() and ref.run_id == first.id


def test_writing_over_another_runs_file_is_refused(trained):
    store, train = trained
    best = store.artifact_path(train.id)
    sha = file_sha256(best)
    result = vss("eval", "--baseline", train.id, "--candidate", train.id, "--report", str(best),
                 "--input-size", "32,48", "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert f"belongs to run {train.id}" in result.output.replace("\n", "")
    assert file_sha256(best) == sha and store.list_runs(kind="eval") == []


def test_check_writable_allows_own_and_unknown_files(tmp_path):
    store = Store(tmp_path / "w.db")
    owner = store.create_run(kind="train", config={"a": 1})
    other = store.create_run(kind="prune", config={"a": 2})
    path = tmp_path / "f.pt"
    path.write_bytes(b"x")
    store.add_artifact(owner.id, kind="checkpoint", path=path)
    assert check_writable(store, owner.id, path) == path
    assert check_writable(store, other.id, tmp_path / "new.pt") == tmp_path / "new.pt"
    with pytest.raises(ConfigError, match=owner.id):
        check_writable(store, other.id, path)


def test_missing_checkpoint_suggests_the_nearest_pt(tmp_path):
    run_dir = tmp_path / "pruned_fpgm_30" / "0123abcd"
    run_dir.mkdir(parents=True)
    (run_dir / "pruned.pt").write_bytes(b"x")
    (run_dir / "widths.json").write_text("{}")
    hint = missing_hint(tmp_path / "pruned_fpgm_30" / "pruned_model.pt")
    assert hint == f"vss writes best.pt/last.pt (train) and pruned.pt (prune); did you mean {run_dir / 'pruned.pt'}?"
    assert "did you mean" not in missing_hint(tmp_path / "nowhere" / "x.pt")


def test_data_root_without_dataset_infers_it_from_the_layout(tmp_path):
    tree = tmp_path / "camvid_tree"
    assert vss("data", "synth", "--out", str(tree), "--format", "camvid", "--n", "6", "--size", "32,48").exit_code == 0
    result = vss("train", "--data-root", str(tree), "--model", "unet", "--epochs", "1", *TINY)
    assert result.exit_code == 0, result.output
    (run,) = Store(tmp_path / "vss.db").list_runs(kind="train")
    assert run.config["dataset"] == "camvid" and run.config["data_root"] == str(tree.resolve())
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = vss("train", "--data-root", str(empty), *TINY)
    assert refused.exit_code == 2 and "pass --dataset" in refused.output
    assert len(Store(tmp_path / "vss.db").list_runs(kind="train")) == 1


def test_run_folders_are_named_by_run_id(trained):
    store, train = trained
    assert Path(train.out_dir).name == train.id
    prune = _prune(store, train, "--method", "l1")
    assert Path(prune.out_dir).name == prune.id and store.artifact_path(prune.id).parent.name == prune.id
