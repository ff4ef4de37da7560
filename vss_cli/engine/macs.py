"""Per-conv multiply-accumulates, counted with forward hooks on one inference pass.

The MACs budget and DMCP's expected-MACs model both start from this table: each conv's MACs on one
(1, 3, H, W) image in the inference graph (eval mode, aux head detached), as `complexity` counts them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from vss_cli.engine.complexity import inference_graph
from vss_cli.engine.hooks import forward_hooks

CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def conv_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> float:
    """Multiply-accumulates of one conv call per image."""
    k = math.prod(module.kernel_size)
    if isinstance(module, nn.ConvTranspose2d):
        return inputs[0][0].numel() * module.out_channels / module.groups * k
    return output[0].numel() * module.in_channels / module.groups * k


def measure_conv_macs(model: nn.Module, input_size: tuple[int, int],
                      device: torch.device) -> dict[nn.Module, float]:
    """Per conv, its MACs on one (1, 3, H, W) image in the inference graph (aux head detached)."""
    table: dict[nn.Module, float] = {}

    def record(module, inputs, output):
        table[module] = table.get(module, 0.0) + conv_macs(module, inputs, output)

    with inference_graph(model) as graph, torch.no_grad():
        convs = [m for m in graph.modules() if isinstance(m, CONVS)]
        with forward_hooks([(m, record) for m in convs]):
            graph(torch.zeros(1, 3, *input_size, device=device))
    return table
