"""MACs and parameters of what runs at inference, counted with ptflops' aten backend.

The aten backend counts multiply-accumulates of the convolutions and matrix products that actually
execute (functional ops, dilations, pruned shapes included) and nothing else, as torchvision counts
for its published figures: DeepLabV3-ResNet50 with its aux head, 21 classes, 520×520 gives its
178.72 G. The pytorch backend also counts BN, ReLU and interpolation (+0.3%) and misses convs
called functionally.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
from ptflops import get_model_complexity_info

from vss_cli.models import build_model

BACKEND = "aten"
_UNITS = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))


def format_count(n: float) -> str:
    """182_300_000_000 -> '182.30G' (the seed report's FLOPs/Params strings)."""
    for scale, unit in _UNITS:
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


@dataclass(frozen=True)
class Complexity:
    """`macs`: multiply-accumulates of one forward pass of one image; `flops` = 2 × macs."""

    macs: int
    params: int
    backend: str = BACKEND

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def macs_str(self) -> str:
        return format_count(self.macs)

    @property
    def params_str(self) -> str:
        return format_count(self.params)


class _Outer(nn.Module):
    """Throw-away wrapper: ptflops' aten backend leaves hooks on the children of the module it is
    given, so it is given this wrapper, whose only child is another throw-away wrapper."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = _Inner(model)

    def forward(self, x: torch.Tensor):
        return self.inner(x)


class _Inner(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model(x)


@contextlib.contextmanager
def inference_graph(model: nn.Module, include_aux: bool = False) -> Iterator[nn.Module]:
    """The model in eval mode with its aux head detached (unless `include_aux`); all restored after."""
    modes = {m: m.training for m in model.modules()}
    aux = getattr(model, "aux_classifier", None)
    if aux is not None and not include_aux:
        model.aux_classifier = None
    try:
        yield model.eval()
    finally:
        if aux is not None:
            model.aux_classifier = aux
        for module, training in modes.items():
            module.train(training)


def count_complexity(model: nn.Module, input_size: tuple[int, int], device: str | torch.device | None = None,
                     include_aux: bool = False) -> Complexity:
    """MACs and params of one forward pass on a (1, 3, H, W) input, the aux head excluded.

    `device`: where to run the counting pass (default: where the model is); the model is moved
    back afterwards. `include_aux=True` counts the aux head too (torchvision's published figures do).
    """
    first = next(model.parameters(), None)
    home = first.device if first is not None else torch.device("cpu")
    device = torch.device(device) if device is not None else home
    dtype = first.dtype if first is not None else torch.float32
    model.to(device)
    try:
        with inference_graph(model, include_aux) as graph, torch.no_grad():
            params = sum(p.numel() for p in graph.parameters())
            macs = _count_macs(graph, (3, *input_size), device, dtype)
    finally:
        model.to(home)
    return Complexity(macs=int(macs), params=int(params))


def _count_macs(model: nn.Module, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> int:
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        macs, _ = get_model_complexity_info(
            _Outer(model), shape, as_strings=False, print_per_layer_stat=False, backend=BACKEND,
            input_constructor=lambda s: torch.zeros(1, *s, device=device, dtype=dtype),
        )
    if macs is None:  # ptflops swallows the exception and prints it
        lines = [line for line in log.getvalue().splitlines() if line.strip()]
        raise RuntimeError(f"MACs counting failed: {lines[-1] if lines else 'unknown error'}")
    return macs


def model_complexity(name: str, num_classes: int, input_size: tuple[int, int], *, width: float = 1.0,
                     aux_loss: bool = False) -> Complexity:
    """Count a registered model built on the meta device: shapes only, so full width costs nothing.

    With `aux_loss` the aux head is built and counted, as in torchvision's published figures.
    """
    with torch.device("meta"):
        model = build_model(name, num_classes, width=width, aux_loss=aux_loss)
    return count_complexity(model, input_size, include_aux=aux_loss)
