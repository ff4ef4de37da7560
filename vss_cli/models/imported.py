"""Any model by import path (`--model my_pkg.nets:build_bisenet`) or by an entry point of the
`vss.models` group (a package's `[project.entry-points."vss.models"] bisenet = "my_pkg.nets:build_bisenet"`).

The factory is a callable `factory(num_classes, **options) -> nn.Module`; it may attach a
`vss_cli.models.ModelStructure` as `model.vss_structure` or return `(model, structure)`, else the
structure is derived from the model's attributes (`adapter.derive_structure`). A checkpoint records
the import path and the version of the package that provides it (or the module's `__version__`),
and replay refuses, in one line, code that is missing or at another version.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
from collections.abc import Callable

import torch.nn as nn

from vss_cli.errors import ConfigError
from vss_cli.models.adapter import adapt
from vss_cli.models.registry import ModelInfo, ModelSource, register_source

GROUP = "vss.models"
IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def load_factory(path: str) -> Callable[..., nn.Module]:
    """`package.module:attr` -> the callable, with one-line errors for every way it can be missing."""
    module_name, attr = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model {path} cannot be imported ({type(exc).__name__}: {exc}): install the package "
                          "that provides it or put its folder on PYTHONPATH") from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ConfigError(f"module {module_name} has no {attr}: check the name after ':' in --model {path}")
    if not callable(factory):
        raise ConfigError(f"{path} is a {type(factory).__name__}, not a callable: point --model at a factory "
                          "function taking num_classes")
    return factory


def factory_builder(path: str, what: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, **options) -> nn.Module:
        factory = load_factory(path)
        try:
            inspect.signature(factory).bind(num_classes, **options)
        except TypeError as exc:
            raise ConfigError(f"{what} does not take num_classes={num_classes}"
                              f"{''.join(f', {k}={v!r}' for k, v in options.items())} ({exc}): pass the options "
                              "its factory accepts") from None
        except ValueError:  # no signature (a builtin or C callable): let the call decide
            pass
        return adapt(factory(num_classes, **options), num_classes, what)

    return build


def requirements(module_name: str) -> dict:
    """{distribution: version} of what provides `module_name`, or its `__version__` when no installed
    distribution does (a module on PYTHONPATH)."""
    top = module_name.split(".")[0]
    dists = importlib.metadata.packages_distributions().get(top, [])
    if dists:
        return {"requires": {d: importlib.metadata.version(d) for d in sorted(set(dists))}}
    version = getattr(importlib.import_module(module_name), "__version__", None)
    return {"module_version": str(version)} if version is not None else {}


def import_info(name: str) -> ModelInfo:
    return ModelInfo(name, factory_builder(name, name), None, {}, f"factory {name}")


def import_provenance(name: str) -> dict:
    load_factory(name)  # a one-line error when it cannot be imported
    return {"source": "import", "import_path": name, **requirements(name.split(":")[0])}


def entry_point(name: str) -> importlib.metadata.EntryPoint | None:
    return next((ep for ep in importlib.metadata.entry_points(group=GROUP) if ep.name == name), None)


def entry_point_info(name: str) -> ModelInfo:
    ep = entry_point(name)
    return ModelInfo(name, factory_builder(ep.value, f"{name} ({ep.value})"), None, {},
                     f"entry point of {ep.dist.name if ep.dist else 'an installed package'}")


def entry_point_provenance(name: str) -> dict:
    ep = entry_point(name)
    load_factory(ep.value)
    requires = {"requires": {ep.dist.name: ep.dist.version}} if ep.dist else requirements(ep.module)
    return {"source": "entry-point", "entry_point": name, "import_path": ep.value, **requires}


IMPORT_SOURCE = register_source(ModelSource(
    name="import", matches=lambda n: bool(IMPORT_PATH.match(n)), info=import_info, provenance=import_provenance,
    scheme="package.module:factory", priority=10))
ENTRY_POINT_SOURCE = register_source(ModelSource(
    name="entry-point", matches=lambda n: entry_point(n) is not None, info=entry_point_info,
    provenance=entry_point_provenance, scheme=f"a '{GROUP}' entry point", priority=20))
