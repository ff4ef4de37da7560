"""A method's options as a frozen dataclass, and what a method reports having done.

Options: each field is one option — its type, its default (the paper's) and its help text
(`option(default, help, choices=...)`). `parse_options` turns the `--option KEY=VALUE` values (or
Python values) into the dataclass once: unknown keys, values of the wrong type and values outside
`choices` fail with one line, then the dataclass's own `check()` tests ranges. `vss methods` lists
the fields.

Reports: `prepare()` and `score()` return what they did as a `MethodReport` dataclass (one per method,
typed fields), which the prune run records as notes; methods never write a free dict.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vss_cli.errors import ConfigError

NONE_WORDS = {"none", "null", ""}
TRUE_WORDS, FALSE_WORDS = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def option(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A dataclass field for one method option."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class MethodOptions:
    """Base of every method's options; a method without options uses it as it is."""

    def check(self) -> None:
        """Ranges and combinations, raising `ConfigError` (types and choices are checked before)."""


@dataclass(frozen=True)
class OptionInfo:
    """One option as `vss methods` lists it."""

    name: str
    type: str
    default: Any
    help: str
    choices: tuple | None


def option_infos(cls: type[MethodOptions]) -> list[OptionInfo]:
    hints = typing.get_type_hints(cls)
    return [OptionInfo(f.name, _type_name(hints[f.name]), f.default, f.metadata.get("help", ""),
                       f.metadata.get("choices")) for f in dataclasses.fields(cls)]


def _type_name(tp) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if _is_optional(tp):
        return f"{args[0].__name__} | None"
    return getattr(tp, "__name__", str(tp))


def _is_optional(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _coerce(method: str, key: str, tp, value):
    """`value` as the declared type; strings from the command line are parsed."""
    if _is_optional(tp):
        if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    try:
        if tp is bool:
            if isinstance(value, str) and value.lower() in TRUE_WORDS | FALSE_WORDS:
                return value.lower() in TRUE_WORDS
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            raise ValueError(value)
        if tp is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
        if tp is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"method '{method}': option {key}={value!r} is not a {_type_name(tp)}") from None


def parse_options(cls: type[MethodOptions], given: Mapping[str, Any], method: str) -> MethodOptions:
    """The options dataclass from `given` (defaults for the rest), validated once."""
    infos = {i.name: i for i in option_infos(cls)}
    unknown = sorted(set(given) - set(infos))
    if unknown:
        raise ConfigError(f"method '{method}' has no option {', '.join(unknown)}: its options are "
                          f"{', '.join(infos) or 'none'} (see `vss methods`)")
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(method, k, hints[k], v) for k, v in given.items()}
    for key, value in values.items():
        choices = infos[key].choices
        if choices and value not in choices:
            raise ConfigError(f"method '{method}': option {key}={value} is not one of {'|'.join(map(str, choices))}")
    parsed = cls(**values)
    parsed.check()
    return parsed


@dataclass
class MethodReport:
    """What a method's `prepare()` or `score()` did; subclasses add typed fields. `notes()` is how
    the prune run records it (fields that are None are left out)."""

    def notes(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


class Scores(Mapping):
    """Per-channel scores per group name (a read-only mapping) and the report of how they were made."""

    def __init__(self, by_group: Mapping[str, torch.Tensor], report: MethodReport | None = None) -> None:
        self.by_group = dict(by_group)
        self.report = report if report is not None else MethodReport()

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.by_group[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_group)

    def __len__(self) -> int:
        return len(self.by_group)
