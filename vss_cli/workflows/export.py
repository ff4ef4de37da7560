"""`vss export`: a (pruned) checkpoint as a deployable file, ONNX or TorchScript, conv-BN folded.

The exported graph is the inference graph (aux head dropped) with every conv-BN pair folded
(`engine.fuse`); it takes `images` (N, 3, H, W, batch dynamic) and returns the `out` logits. Before
anything is written, the exported bytes are loaded back (onnxruntime for ONNX, torch.jit for
TorchScript) and their output on a fixed input compared with the checkpoint's torch model; the max abs
difference is a metric of the `export` run, which records the file as its artifact and an
`exported-from` edge to the source run.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from vss_cli.engine.progress import log
from vss_cli.errors import ConfigError
from vss_cli.fileio import atomic_output
from vss_cli.pruning.checkpoint import load_checkpoint
from vss_cli.workflows.common import check_writable, default_out_dir, recorded, save_artifact, versions
from vss_cli.workflows.options import ExportOptions
from vss_cli.workflows.paths import choose_input_size, recorded_input_size, resolve_checkpoint

ONNX_OPSET = 17
MAX_ABS_DIFF = 1e-4  # an export whose output differs more from torch's is a failed export


@dataclass
class ExportOutcome:
    run_id: str
    path: Path
    max_abs_diff: float
    bn_folded: int


class _Logits(nn.Module):
    """The inference graph returning the `out` tensor (exporters want tensors, not dicts)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)["out"]


def _onnx_bytes(module: nn.Module, x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(module, (x,), buf, input_names=["images"], output_names=["logits"], opset_version=ONNX_OPSET,
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return buf.getvalue()


def _onnx_run(data: bytes, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x.numpy()})[0]


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path, "wb") as f:
        f.write(data)


def _torchscript_bytes(module: nn.Module, x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit is deprecated upstream but still what C++/mobile runtimes load
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(module, x), buf)
    return buf.getvalue()


def _torchscript_run(data: bytes, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(io.BytesIO(data), map_location="cpu")(x).numpy()


@dataclass(frozen=True)
class Exporter:
    suffix: str
    write: Callable[[nn.Module, torch.Tensor], bytes]
    run: Callable[[bytes, torch.Tensor], np.ndarray]  # the exported bytes loaded back and run
    needs: str | None = None  # the module the format needs (an optional extra)


EXPORTERS = {
    "onnx": Exporter(".onnx", _onnx_bytes, _onnx_run, needs="onnxruntime"),
    "torchscript": Exporter(".pt", _torchscript_bytes, _torchscript_run),
}


def _check(opts: ExportOptions) -> Exporter:
    if opts.format not in EXPORTERS:
        raise ConfigError(f"--format {opts.format} is unknown: use {' or '.join(EXPORTERS)}")
    exporter = EXPORTERS[opts.format]
    for module in ("onnx", exporter.needs) if opts.format == "onnx" else ():
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(f"--format onnx needs {module}: pip install 'vss-cli[export]'") from None
    return exporter


def deployable(model: nn.Module, fuse_bn: bool) -> tuple[nn.Module, int]:
    """The eval-mode inference graph of `model`, conv-BN folded; returns it and the folded pair count."""
    import copy

    from vss_cli.engine.fuse import fold_conv_bn

    model = copy.deepcopy(model).cpu().eval()
    if getattr(model, "aux_classifier", None) is not None:
        model.aux_classifier = None
    if not fuse_bn:
        return _Logits(model).eval(), 0
    result = fold_conv_bn(model, inplace=True)
    return _Logits(result.model).eval(), len(result.pairs)


def export_run(opts: ExportOptions, store) -> ExportOutcome:
    """Write the export, check it against torch, and record it as an `export` run."""
    from vss_cli.data import dataset_defaults
    from vss_cli.store import config_key, file_sha256

    exporter = _check(opts)
    ref = resolve_checkpoint(store, opts.run, option="RUN")
    loaded = load_checkpoint(ref.path, "cpu")
    input_size = choose_input_size(opts.input_size, recorded_input_size(loaded.dataset, ref.run),
                                   dataset_defaults(loaded.dataset.get("name", "synthetic")).default_input_size,
                                   recorded_from=str(ref.path))
    config = {**asdict(opts), "run": None, "out": None, "input_size": list(input_size), "kind": "export",
              "model": loaded.spec.name, "opset": ONNX_OPSET if opts.format == "onnx" else None}
    parents = [(ref.run_id, "exported-from")] if ref.run_id else []
    check_writable(store, None, opts.out)  # another run's file is refused before this run exists
    run = store.create_run(kind="export", config=config, parents=parents, status="running",
                           config_key=config_key(config, [file_sha256(ref.path)]), versions=versions(torch.device("cpu")))
    path = Path(opts.out) if opts.out else default_out_dir("export", run.id, None) / f"model{exporter.suffix}"
    store.update_run(run.id, out_dir=str(path.parent.resolve()))
    with recorded(store, run.id):
        module, folded = deployable(loaded.model, opts.fuse_bn)
        x = torch.randn(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = _Logits(loaded.model.cpu().eval())(x).numpy()
        data = exporter.write(module, x)
        diff = float(np.abs(exporter.run(data, x) - expected).max())  # checked before anything is written
        if not diff <= MAX_ABS_DIFF:
            raise RuntimeError(f"the {opts.format} export differs from torch by {diff:.3g} (> {MAX_ABS_DIFF})")
        save_artifact(store, run.id, "export", path, lambda p: _write_bytes(p, data))
        store.add_metrics(run.id, {"max_abs_diff": diff, "bn_folded": folded, "bytes": len(data)})
    log(f"export run {run.id}: {opts.format}, {folded} conv-BN pairs folded, max |diff| {diff:.2e} -> {path}")
    return ExportOutcome(run_id=run.id, path=path, max_abs_diff=diff, bn_folded=folded)
