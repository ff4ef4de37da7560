"""Where criteria that read feature maps (and gates on them) find a group's channels, and the
progress-reporting scoring pass. The hooks themselves live in `engine.hooks`.

A group's channels are observed where its BatchNorm layers output them (post-BN, pre-activation);
a group without BatchNorm is observed at its convs' outputs.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn

from vss_cli.engine.progress import log, progress_bar
from vss_cli.pruning.surgery import LayerGroup


def channel_outputs(group: LayerGroup) -> list[nn.Module]:
    """The modules whose outputs carry the group's channels: its BNs, else its convs."""
    return [m for _, m in group.bns] or [m for _, m in group.convs]


def scoring_batches(ctx, what: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`ctx.batches()` with a progress bar (images scored of `ctx.samples`, with ETA) for a scoring pass;
    a pass that scores fewer images than `--samples` asked for says so (and the run's notes record it)."""
    scored = 0
    with progress_bar(f"{what}: scoring", total=ctx.samples) as update:
        for images, labels in ctx.batches():
            yield images, labels
            scored += len(images)
            update(advance=len(images))
    ctx.scored_images = scored
    if ctx.samples and scored < ctx.samples:
        log(f"warning: {what} scored {scored} of the {ctx.samples} images --samples asked for (the scoring "
            "split holds no more): its scores rest on fewer images")
