"""The registry of pruning methods: every module of `pruning.methods` registers its class on import
(`base.register_method`); this module loads them and looks them up, so `base` never imports a method."""

from __future__ import annotations

import vss_cli.pruning.methods  # noqa: F401  (registers every built-in method)
from vss_cli.errors import ConfigError
from vss_cli.pruning.base import METHODS, PruningMethod
from vss_cli.pruning.method_options import option_infos


def list_methods() -> list[str]:
    return sorted(METHODS)


def method_class(name: str) -> type[PruningMethod]:
    if name not in METHODS:
        raise ConfigError(f"unknown pruning method '{name}': choose from {', '.join(sorted(METHODS))}")
    return METHODS[name]


def get_method(name: str, **options) -> PruningMethod:
    return method_class(name)(**options)


def describe_methods() -> list[dict]:
    """One row per method: its name, paper, what its scores need, its paper allocation, and its
    options with their types, defaults and help (what `vss methods` lists)."""
    rows = []
    for name in list_methods():
        cls = METHODS[name]
        options = option_infos(cls.Options)
        rows.append({
            "method": name, "paper": cls.paper, "scores_need": cls.scores_need,
            "paper_allocation": cls.paper_allocation,
            "options": [{"name": i.name, "type": i.type, "default": i.default, "help": i.help,
                         **({"choices": list(i.choices)} if i.choices else {})} for i in options],
            "options_str": ", ".join(f"{i.name}={i.default}" for i in options) or "-",
        })
    return rows
