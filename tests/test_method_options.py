"""Method options as frozen dataclasses (types, paper defaults, help), validated once when a method is
built, listed by `vss methods`, and method reports instead of a free notes dict (issue 21)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.errors import ConfigError
from vss_cli.pruning.base import PruningMethod
from vss_cli.pruning.method_options import MethodOptions
from vss_cli.pruning.registry import describe_methods, get_method, list_methods, method_class

runner = CliRunner()


@pytest.mark.parametrize("name", list_methods())
def test_every_method_declares_frozen_options_with_help_and_its_paper(name):
    cls = method_class(name)
    assert issubclass(cls.Options, MethodOptions) and cls.Options.__dataclass_params__.frozen
    assert cls.paper and cls.scores_need
    for f in dataclasses.fields(cls.Options):
        assert f.metadata.get("help"), f"{name}.{f.name} has no help"
    method = get_method(name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        method.config.x = 1


def test_command_line_strings_become_the_declared_types():
    fgp = get_method("fgp", share="0.8", only_class="2", mask="predicted")
    assert fgp.config.share == 0.8 and fgp.config.only_class == 2 and fgp.config.mask == "predicted"
    assert get_method("fgp", share="none").config.share is None
    dmcp = get_method("dmcp", search_epochs="2", keep_search_weights="true", target_macs=1)
    assert dmcp.config.search_epochs == 2 and dmcp.config.keep_search_weights is True
    assert dmcp.config.target_macs == 1.0 and isinstance(dmcp.config.target_macs, float)


@pytest.mark.parametrize(("name", "options", "message"), [
    ("sirfp", {"min_keep": 0.02}, "has no option min_keep"),
    ("fgp", {"heat": "cam"}, "heat=cam is not one of"),
    ("dmcp", {"search_epochs": "1.5"}, "search_epochs='1.5' is not a int"),
    ("taylor", {"group": "sum"}, "group=sum is not one of mean|gate"),
    ("sirfp", {"layer_keep": 1.5}, "layer_keep 1.5 must be in"),
    ("fpgm", {"p": "two"}, "p='two' is not a float"),
])
def test_bad_options_fail_when_the_method_is_built(name, options, message):
    with pytest.raises(ConfigError, match=message):
        get_method(name, **options)


def test_option_defaults_are_the_dataclass_defaults():
    assert method_class("slimming").option_default("sparse_epochs") == 8
    assert method_class("sirfp").option_default("layer_keep") == 0.01
    assert PruningMethod.Options is MethodOptions


def test_vss_methods_lists_every_method_with_its_options():
    result = runner.invoke(app, ["methods", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in json.loads(result.output)}
    assert set(rows) == set(list_methods())
    assert rows["sirfp"]["paper_allocation"] == "regions" and "dywu98/SIRFP" in rows["sirfp"]["paper"]
    options = {o["name"]: o for o in rows["fgp"]["options"]}
    assert options["share"]["default"] is None and options["heat"]["choices"] == ["gradcam", "elementwise"]
    assert rows == {r["method"]: r for r in json.loads(json.dumps(describe_methods(), default=str))}
