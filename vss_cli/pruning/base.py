"""The pruning-method interface and its registry.

A method scores the channels of each prunable group (low = pruned first) and optionally supplies a
preparation phase run through the one `engine.fit`. How scores become a plan is the planner's
(`planner.plan_channels`); a method whose paper allocates its own way registers that rule beside
itself (`planner.register_allocation`) and names it in `paper_allocation`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn

from vss_cli.errors import ConfigError
from vss_cli.pruning.method_options import MethodOptions, MethodReport, Scores, parse_options
from vss_cli.pruning.surgery import LayerGroup


@dataclass
class PruneContext:
    """Everything a method may read while scoring one model.

    `batches()` yields (images, labels) minibatches of the training split (no augmentation) on
    `device`, `samples` images in all; `fit(hooks, epochs)` trains the model through `engine.fit` with
    the run's settings (for a method that trains as part of pruning).
    """

    model: nn.Module
    groups: list[LayerGroup]
    device: torch.device
    num_classes: int
    ignore_index: int = 255
    seed: int = 0
    samples: int = 64
    ratio: float = 0.3
    round_to: int = 8
    allocation: str = "paper"  # paper | uniform | global (planner.USER_ALLOCATIONS)
    normalizer: str = "mean"  # for the global allocation: mean | max | none
    budget: str = "channels"  # what `ratio` counts (budget registry)
    input_size: tuple[int, int] = (64, 64)
    batch_source: Callable[[], Iterator] | None = None
    fit: Callable | None = None
    parent_config: dict = field(default_factory=dict)
    scored_images: int | None = None  # images the last scoring pass saw (set by `features.scoring_batches`)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.batch_source is None:
            raise ConfigError("this method needs data: pass --samples N (> 0) and a dataset")
        for images, labels in self.batch_source():
            yield images.to(self.device), labels.to(self.device)


class PruningMethod:
    """Base class: subclasses set `name`, implement `score`, and may override the rest."""

    name: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False
    normalize: ClassVar[bool] = True  # informational: False = scores comparable across layers raw (planner rules decide)
    paper_allocation: ClassVar[str] = "global"  # the allocation rule of the method's paper (planner.ALLOCATIONS)
    paper: ClassVar[str] = ""  # the paper (and the reference code it was checked against)
    scores_need: ClassVar[str] = "weights"  # what scoring reads: weights, data, gradients, training...
    Options: ClassVar[type[MethodOptions]] = MethodOptions  # frozen dataclass: types, paper defaults, help
    # the option giving the epochs of training the method runs itself (a sparse phase, a width search);
    # a grid charges them to the cell's training budget
    training_epochs_option: ClassVar[str | None] = None
    training_epochs_min: ClassVar[int] = 0  # the fewest epochs that option allows

    def __init__(self, **options):
        self.config = parse_options(self.Options, options, self.name)  # validated once

    @classmethod
    def option_default(cls, key: str):
        return getattr(cls.Options(), key)

    def prepare(self, ctx: PruneContext) -> MethodReport | None:
        """Optional phase before scoring (e.g. a short sparse training); returns what it did."""
        return None

    def score(self, ctx: PruneContext) -> Scores:
        """Per-channel importance for each group name (lower = less important), with its report."""
        raise NotImplementedError


METHODS: dict[str, type[PruningMethod]] = {}  # filled by @register_method; read through `registry`


def register_method(cls: type[PruningMethod]) -> type[PruningMethod]:
    """Class decorator adding a method to the registry under `cls.name`."""
    if not cls.name:
        raise ValueError("a pruning method needs a name")
    METHODS[cls.name] = cls
    return cls


def mean_over_members(per_member: list[torch.Tensor]) -> torch.Tensor:
    """A group's score: the mean of its members' per-channel scores (METHODS.md default)."""
    return torch.stack([s.float() for s in per_member]).mean(0)
