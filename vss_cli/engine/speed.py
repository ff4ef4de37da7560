"""Inference speed of a baseline and a candidate, timed alternately so drift cancels in their ratio.

Both models see the same input tensor under `torch.inference_mode`; CUDA work is synchronised
around every timed forward and wall time comes from `time.perf_counter`. Iterations interleave the
two models (ABBA order), so clock boosts, thermal throttling or a neighbour's load hit both alike.
The speedup is the median of the per-iteration ratios baseline_i / candidate_i: each ratio compares
two forwards run back to back, so drift cancels inside every pair. (The ratio of the two medians does
not cancel bursty load: with half the iterations slowed, each median may land in a different mode.
On a loaded 2-core CPU, identical models gave 0.67-1.32 that way and 0.84-1.09 paired.)
Only the inference graph is timed: an auxiliary head is detached for the measurement and put back.
"""

from __future__ import annotations

import copy
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from vss_cli.engine.complexity import inference_graph
from vss_cli.errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class SpeedResult:
    """Latency statistics of one model; times are per iteration (one batch), fps is images/s at the median."""

    median_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    fps: float
    avg_ms_per_iter: float
    pixels_per_second: float
    iterations: int
    warmup: int
    batch: int
    input_size: tuple[int, int]
    device: str
    dtype: str
    channels_last: bool
    times_ms: list[float] = field(default_factory=list, repr=False)  # per iteration, paired by index

    def to_report(self) -> dict:
        """The seed guide's `fps` / `avg_ms_per_iter` plus the distribution and the setting."""
        d = asdict(self)
        d.pop("times_ms")
        d["input_size"] = list(self.input_size)
        return d


def device_name(device: torch.device) -> str:
    """A human-readable name of the device the timings come from."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine() or 'unknown'}, {torch.get_num_threads()} threads)"


def check_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The torch dtype for `fp32`/`bf16`/`fp16`; fp16 on the CPU is bad input."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype} is unknown: use fp32, bf16 or fp16")
    if dtype == "fp16" and device.type == "cpu":
        raise ConfigError("--dtype fp16 is not supported for timing on the CPU: use bf16 or fp32 on CPU")
    return DTYPES[dtype]


def _timing_copy(model: nn.Module, dtype: torch.dtype, channels_last: bool, device: torch.device) -> nn.Module:
    """The model itself when it already runs as asked, else a converted copy (casting in place loses bits)."""
    on_device = next(model.parameters()).device == device
    if dtype == torch.float32 and not channels_last and on_device:
        return model
    converted = copy.deepcopy(model).to(device=device, dtype=dtype)
    return converted.to(memory_format=torch.channels_last) if channels_last else converted


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timer(model: nn.Module, x: torch.Tensor, device: torch.device) -> Callable[[], float]:
    def run() -> float:
        _synchronize(device)
        start = time.perf_counter()
        model(x)
        _synchronize(device)
        return (time.perf_counter() - start) * 1000.0

    return run


def _result(times_ms: list[float], *, warmup: int, batch: int, input_size: tuple[int, int], device: torch.device,
            dtype: str, channels_last: bool) -> SpeedResult:
    median = statistics.median(times_ms)
    fps = batch * 1000.0 / median
    return SpeedResult(
        median_ms=median, min_ms=min(times_ms), max_ms=max(times_ms), mean_ms=statistics.fmean(times_ms),
        fps=fps, avg_ms_per_iter=statistics.fmean(times_ms), pixels_per_second=fps * input_size[0] * input_size[1],
        iterations=len(times_ms), warmup=warmup, batch=batch, input_size=tuple(input_size),
        device=device_name(device), dtype=dtype, channels_last=channels_last, times_ms=list(times_ms),
    )


def measure_speed_pair(baseline: nn.Module, candidate: nn.Module, *, input_size: tuple[int, int], batch: int,
                       device: str | torch.device, dtype: str = "fp32", channels_last: bool = False,
                       warmup: int = 10, iters: int = 50, seed: int = 0) -> tuple[SpeedResult, SpeedResult]:
    """Time `baseline` and `candidate` on one shared input, alternating iterations; returns both results.

    `times_ms[i]` of the two results were measured back to back (see `speedups`). `dtype` casts (a
    copy of) each model and the input; the callers' models are left as they were.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    torch_dtype = check_dtype(dtype, device)
    if batch < 1 or iters < 1 or warmup < 0:
        raise ConfigError(f"speed needs batch >= 1, iters >= 1 and warmup >= 0 (got {batch}, {iters}, {warmup})")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *input_size, generator=gen).to(device=device, dtype=torch_dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times: tuple[list[float], list[float]] = ([], [])
    with inference_graph(baseline), inference_graph(candidate), torch.inference_mode():
        timers = (_timer(_timing_copy(baseline, torch_dtype, channels_last, device), x, device),
                  _timer(_timing_copy(candidate, torch_dtype, channels_last, device), x, device))
        for _ in range(warmup):
            timers[0]()
            timers[1]()
        for i in range(iters):
            order = (0, 1) if i % 2 == 0 else (1, 0)  # ABBA: neither model always runs first
            for k in order:
                times[k].append(timers[k]())
    setting = dict(warmup=warmup, batch=batch, input_size=tuple(input_size), device=device, dtype=dtype,
                   channels_last=channels_last)
    return _result(times[0], **setting), _result(times[1], **setting)


def speedups(baseline: SpeedResult, candidate: SpeedResult) -> dict[str, float]:
    """The seed's `speedup_latency` and `speedup_fps`: the median of the paired ratios baseline_i /
    candidate_i (for one batch, latency ratio = throughput ratio, so the two are equal, as in the seed's
    example), plus `speedup_of_medians` = baseline median / candidate median for reference."""
    paired = statistics.median(b / c for b, c in zip(baseline.times_ms, candidate.times_ms, strict=True))
    return {"speedup_latency": paired, "speedup_fps": paired,
            "speedup_of_medians": baseline.median_ms / candidate.median_ms}
