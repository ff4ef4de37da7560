"""Options composed, not copied: every prune/eval option reaches `vss bench`, CLI defaults are the
dataclass defaults, the method-option parser, and bench options surviving the round trip `--join` uses."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import typer

from vss_cli.cli import bench as bench_cli
from vss_cli.cli import eval as eval_cli
from vss_cli.cli import options as o
from vss_cli.cli import prune as prune_cli
from vss_cli.workflows.bench_options import PER_CELL, BenchOptions
from vss_cli.workflows.options import EvalOptions, PruneOptions, TrainOptions, default_of

BENCH_PARAMS = set(inspect.signature(bench_cli.bench).parameters)


@pytest.mark.parametrize(("cls", "step", "table", "via_option"), [
    (PruneOptions, "prune", bench_cli.PRUNE_FIELDS, {"method_options"}),
    (EvalOptions, "eval", bench_cli.EVAL_FIELDS, set()),
])
def test_every_prune_and_eval_option_is_reachable_from_bench(cls, step, table, via_option):
    template_fields = {f.name for f in dataclasses.fields(cls)} - set(PER_CELL[step]) - via_option
    assert template_fields <= set(table.values()), f"bench has no flag for {template_fields - set(table.values())}"
    assert set(table) <= BENCH_PARAMS
    assert "option" in BENCH_PARAMS  # method options: --option METHOD:KEY=VALUE


def _defaults(command) -> dict:
    return {name: p.default for name, p in inspect.signature(command).parameters.items()
            if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize(("command", "cls", "names"), [
    (prune_cli.prune, PruneOptions, {"method": "method", "global_ratio": "global_ratio", "round_to": "round_to",
                                     "samples": "samples", "batch_size": "batch_size", "seed": "seed"}),
    (eval_cli.eval_cmd, EvalOptions, {n: n for n in o.EVAL}),
    (bench_cli.bench, EvalOptions, {"batch_size": "batch_size", "dtype": "dtype", "speed_iters": "speed_iters",
                                    "warmup": "warmup", "oracle_layers": "oracle_layers", "split": "split"}),
    (bench_cli.bench, PruneOptions, {"round_to": "round_to", "samples": "samples", "prune_batch_size": "batch_size"}),
])
def test_cli_defaults_are_the_dataclass_defaults(command, cls, names):
    defaults = _defaults(command)
    for param, field in names.items():
        given = o.parse_round_to(defaults[param]) if param == "round_to" else defaults[param]
        assert given == default_of(cls, field), param


def test_bench_defaults_build_the_default_bench_options():
    opts = bench_cli.build_options({**_defaults(bench_cli.bench), "option": None})
    default = BenchOptions()
    assert (opts.methods, opts.ratios, opts.seeds) == (default.methods, default.ratios, default.seeds)
    assert opts.prune == default.prune and opts.eval == default.eval
    assert opts.finetune == default.finetune and opts.worker_grace == default.worker_grace


def test_method_options_are_qualified_on_bench_and_plain_on_prune():
    assert o.parse_method_options(["share=0.8", "n=3", "mode=fast"]) == {None: {"share": 0.8, "n": 3, "mode": "fast"}}
    assert o.parse_method_options(["fgp:share=0.8", "fgp:top-k=2", "dmcp:target_macs=1e9"], methods=["fgp", "dmcp"]) == {
        "fgp": {"share": 0.8, "top_k": 2}, "dmcp": {"target_macs": 1e9}}
    for bad, methods in ((["share"], None), (["=1"], None), (["share=0.8"], ["fgp"]), (["l1:share=0.8"], ["fgp"])):
        with pytest.raises(typer.BadParameter):
            o.parse_method_options(bad, methods=methods)
    assert prune_cli._method_options(["share=0.7"], "fgp", share=0.9) == {"share": 0.7}
    assert prune_cli._method_options(["fgp:share=0.7"], "fgp") == {"share": 0.7}
    with pytest.raises(typer.BadParameter):
        prune_cli._method_options(["l1:share=0.7"], "fgp")


def test_a_cell_is_the_template_with_its_axes_replaced():
    opts = BenchOptions(prune=PruneOptions(round_to=4, samples=3), method_options={"fgp": {"share": 0.8}},
                        eval=EvalOptions(oracle_layers=2, channels_last=True))
    cell = opts.cell_prune("fgp", 0.4, 2, ckpt="base", save="out")
    assert (cell.method, cell.global_ratio, cell.seed, cell.ckpt, cell.round_to, cell.samples) == (
        "fgp", 0.4, 2, "base", 4, 3)
    assert cell.method_options == {"share": 0.8} and opts.cell_prune("l1", 0.4, 2).method_options == {}
    ev = opts.cell_eval(baseline="b", candidate="c", out_dir=None)
    assert ev.oracle_layers == 2 and ev.channels_last and ev.candidate == "c"


def test_bench_options_round_trip_through_the_recorded_config():
    import json

    opts = BenchOptions(methods=["fgp"], ratios=[0.3], prune=PruneOptions(input_size=(32, 48), round_to=4),
                        finetune=TrainOptions(epochs=0, input_size=(32, 48)), method_options={"fgp": {"share": 0.8}},
                        eval=EvalOptions(oracle_layers=2), baseline="x.pt", worker_grace=5.0)
    again = BenchOptions.from_plain(json.loads(json.dumps(opts.to_plain())))
    assert again == opts
    gpu = again.with_device("cuda:1")
    assert {gpu.prune.device, gpu.eval.device, gpu.finetune.device, gpu.baseline_train.device} == {"cuda:1"}


def test_methods_that_train_themselves_stay_within_the_grids_training_budget():
    from vss_cli.workflows.bench_options import BENCH_BUDGET, BenchOptions
    from vss_cli.workflows.options import TrainOptions

    grid = BenchOptions(finetune=TrainOptions(epochs=3))
    assert grid.prune.budget == BENCH_BUDGET == "macs"
    assert grid.options_of("slimming")["sparse_epochs"] == 3  # its default (8) capped at the grid's 3
    assert grid.options_of("dmcp")["search_epochs"] == 1
    assert "sparse_epochs" not in grid.options_of("l1")
    none = BenchOptions(finetune=TrainOptions(epochs=0))
    assert none.options_of("slimming")["sparse_epochs"] == 0 and none.options_of("dmcp")["search_epochs"] == 1
    given = BenchOptions(finetune=TrainOptions(epochs=3), method_options={"slimming": {"sparse_epochs": 6}})
    assert given.options_of("slimming")["sparse_epochs"] == 6  # an explicit option is the user's choice


def test_fine_tuning_is_the_grids_epochs_less_the_methods_own(tmp_path):
    from vss_cli.store import Store
    from vss_cli.workflows.bench_cells import finetune_epochs_after

    with Store(tmp_path / "t.db") as store:
        slim = store.create_run(kind="prune", config={"m": "slimming"}, metrics={"extra_epochs": 3.0})
        l1 = store.create_run(kind="prune", config={"m": "l1"}, metrics={"extra_epochs": 0.0})
        assert finetune_epochs_after(store, 5, store.get_run(slim.id)) == 2
        assert finetune_epochs_after(store, 2, store.get_run(slim.id)) == 0
        assert finetune_epochs_after(store, 5, store.get_run(l1.id)) == 5
