"""Physical pruning on every registered model with the six classic criteria.

Split (to stay well under ~150 s on a 2-core CPU): every model gets the full round trip with `l1`;
every method gets it on `unet`, `simple_segnet` (MaxUnpool indices) and `deeplabv3_resnet50` (residual
groups, ASPP concat, aux head). The whole models × methods cross product is marked `heavy`.
The round trip: shapes and class count kept, MACs and params strictly lower, checkpoint save/load
gives identical outputs, and a second prune on the pruned model replays on a fresh one.
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from vss_cli.engine.checkpoint import ModelSpec, save_checkpoint
from vss_cli.engine.complexity import Complexity, count_complexity
from vss_cli.engine.train import TrainConfig, fit
from vss_cli.models import build_model, get_model_info, list_models
from vss_cli.pruning.checkpoint import load_checkpoint
from vss_cli.pruning.registry import get_method, list_methods
from vss_cli.pruning.surgery import output_layers_of, prunable_channels, replay_history
from vss_cli.workflows.prune import PruneOptions, prune_model

torch.set_num_threads(1)

NUM_CLASSES = 5
SIZE = (32, 32)
CLASSIC = ("l1", "l2", "random", "fpgm", "taylor", "slimming")
METHOD_MODELS = ("unet", "simple_segnet", "deeplabv3_resnet50")
FAST_OPTIONS = {"slimming": {"sparse_epochs": 1}}  # a one-epoch sparse phase on two batches


def synthetic_batches(n: int = 2, batch: int = 2, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, *SIZE, generator=g), torch.randint(0, NUM_CLASSES, (batch, *SIZE), generator=g))
            for _ in range(n)]


def tiny_fit(model, hooks, epochs: int, lr: float | None = None, optimizer=None, max_iters: int | None = None):
    """`ctx.fit` stand-in: the real `engine.fit` on two random batches."""
    cfg = TrainConfig(epochs=epochs, lr=lr or 0.01, device="cpu", max_iters_per_epoch=max_iters)
    return fit(model, synthetic_batches(seed=1), None, cfg, num_classes=NUM_CLASSES, hooks=hooks,
               optimizer=optimizer, show_progress=False)


def build(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, NUM_CLASSES, **{**get_model_info(name).tiny_kwargs, **kw}).eval()


def prune(model, name: str, method: str, ratio: float = 0.3, round_to: int = 8, history=(), count=None):
    opts = PruneOptions(ckpt="", method=method, global_ratio=ratio, round_to=round_to, samples=4,
                        method_options=FAST_OPTIONS.get(method, {}))
    return prune_model(model, name, get_method(method, **opts.method_options), opts, input_size=SIZE,
                       device="cpu", batch_source=synthetic_batches, fit=tiny_fit, num_classes=NUM_CLASSES,
                       ignore_index=255, count=count or (lambda m: count_complexity(m, SIZE)),
                       old_history=history)


@torch.no_grad()
def outputs(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return model.eval()(x)


def assert_round_trip(name: str, method: str, tmp_path, **model_kw) -> None:
    model = build(name, **model_kw)
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(7))
    before = outputs(model, x)
    base = count_complexity(model, SIZE)

    report, history = prune(model, name, method)
    after = outputs(model, x)
    assert set(after) == set(before)
    assert all(after[k].shape == before[k].shape == (2, NUM_CLASSES, *SIZE) for k in before)
    assert all(m.out_channels == NUM_CLASSES for m in output_layers_of(model, name))
    pruned = count_complexity(model, SIZE)
    assert pruned.macs < base.macs and pruned.params < base.params
    assert (report.macs_before, report.macs_after) == (base.macs, pruned.macs)
    assert report.channels_after < report.channels_before

    spec = ModelSpec(name, NUM_CLASSES, {**get_model_info(name).tiny_kwargs, **model_kw})
    loaded = load_checkpoint(save_checkpoint(tmp_path / "pruned.pt", model=model, spec=spec, history=history))
    assert all((outputs(loaded.model, x)[k] - after[k]).abs().max().item() == 0 for k in after)

    again, combined = prune(model, name, method, history=history)
    assert again.macs_after < again.macs_before == pruned.macs
    assert len(combined) > len(history) and combined[:len(history)] == history
    fresh = build(name, **model_kw)
    replay_history(fresh, combined)
    fresh.load_state_dict(model.state_dict(), strict=True)
    twice = outputs(model, x)
    assert all((outputs(fresh, x)[k] - twice[k]).abs().max().item() == 0 for k in twice)


def test_the_six_classic_methods_are_registered():
    assert set(CLASSIC) <= set(list_methods())


@pytest.mark.parametrize("name", list_models())
def test_l1_round_trip_on_every_model(name, tmp_path):
    assert_round_trip(name, "l1", tmp_path)


@pytest.mark.parametrize("method", [m for m in CLASSIC if m != "l1"])
@pytest.mark.parametrize("name", METHOD_MODELS)
def test_every_method_round_trips(name, method, tmp_path):
    assert_round_trip(name, method, tmp_path, **({"aux_loss": True} if name.startswith("deeplab") else {}))


@pytest.mark.heavy
@pytest.mark.parametrize("method", CLASSIC)
@pytest.mark.parametrize("name", list_models())
def test_every_method_on_every_model(name, method, tmp_path):
    assert_round_trip(name, method, tmp_path, aux_loss=bool(get_model_info(name).structure.aux))  # LR-ASPP has none


def test_taylor_scoring_keeps_bn_statistics():
    model = build("deeplabv3_resnet50")
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    unchanged_while_scoring = []

    class Spy(type(get_method("taylor"))):
        def score(self, ctx):
            scores = super().score(ctx)
            state = ctx.model.state_dict()
            unchanged_while_scoring.append(all(torch.equal(state[k], v) for k, v in stats.items()))
            return scores

    opts = PruneOptions(ckpt="", method="taylor", samples=4)
    prune_model(model, "deeplabv3_resnet50", Spy(), opts, input_size=SIZE, device="cpu",
                batch_source=synthetic_batches, fit=None, num_classes=NUM_CLASSES, ignore_index=255,
                count=lambda m: Complexity(0, 0))
    assert unchanged_while_scoring == [True]
    assert all(p.grad is None for p in model.parameters())


def achieved_ratio(name: str, ratio: float, **model_kw) -> float:
    model = build(name, **model_kw)
    ignored = output_layers_of(model, name)
    before = prunable_channels(model, ignored)
    report, _ = prune(model, name, "l1", ratio=ratio, round_to=1, count=lambda m: Complexity(0, 0))
    achieved = 1 - prunable_channels(model, ignored) / before
    assert achieved == pytest.approx(report.achieved_ratio)
    return achieved


@pytest.mark.parametrize("ratio", [0.2, 0.3, 0.5])
def test_achieved_channel_ratio_matches_the_request(ratio):
    assert abs(achieved_ratio("deeplabv3_resnet50", ratio) - ratio) <= 0.02


@pytest.mark.heavy
@pytest.mark.parametrize("ratio", [0.2, 0.3, 0.5])
def test_achieved_channel_ratio_at_full_width(ratio):
    assert abs(achieved_ratio("deeplabv3_resnet50", ratio, width=1.0) - ratio) <= 0.02


# ---------------------------------------------------------------------------------------------
# the command line: bad input exits 2 with one line and writes no run


@pytest.mark.parametrize("args, message", [
    (["--global-ratio", "1.5"], "--global-ratio 1.5"),
    (["--method", "nope"], "unknown pruning method 'nope'"),
    (["--allocation", "even"], "unknown --allocation 'even'"),
    (["--normalizer", "median"], "unknown --normalizer 'median'"),
    (["--budget", "watts"], "unknown --budget 'watts'"),
])
def test_cli_rejects_bad_input_without_a_run(args, message, tmp_path, monkeypatch):
    from vss_cli.cli.app import app
    from vss_cli.store import Store

    db = tmp_path / "vss.db"
    monkeypatch.setenv("VSS_DB", str(db))
    ckpt = save_checkpoint(tmp_path / "m.pt", model=build("unet"),
                           spec=ModelSpec("unet", NUM_CLASSES, get_model_info("unet").tiny_kwargs))
    result = CliRunner().invoke(app, ["prune", "--ckpt", str(ckpt), *args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and message in lines[0], lines
    assert not db.exists() or Store(db).list_runs() == []


REGISTRY_OPTIONS = {"slimming": {"sparse_epochs": 1}, "dmcp": {"max_iters": 2}}


@pytest.mark.parametrize("method", list_methods())
def test_every_registered_method_round_trips_on_unet(method, tmp_path):
    """Registering a method is what gets it tested: each one prunes, saves and reloads bit-identically."""
    model = build("unet")
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(3))
    opts = PruneOptions(ckpt="", method=method, global_ratio=0.3, round_to=1, samples=4,
                        method_options=REGISTRY_OPTIONS.get(method, {}))
    report, history = prune_model(model, "unet", get_method(method, **opts.method_options), opts, input_size=SIZE,
                                  device="cpu", batch_source=synthetic_batches, fit=tiny_fit,
                                  num_classes=NUM_CLASSES, ignore_index=255,
                                  count=lambda m: count_complexity(m, SIZE))
    assert report.macs_after < report.macs_before and history
    assert outputs(model, x)["out"].shape == (2, NUM_CLASSES, *SIZE)
    spec = ModelSpec("unet", NUM_CLASSES, get_model_info("unet").tiny_kwargs)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "p.pt", model=model, spec=spec, history=history))
    assert (outputs(loaded.model, x)["out"] - outputs(model, x)["out"]).abs().max().item() == 0
