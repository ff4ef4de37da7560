"""Inference speed of a baseline and a candidate, timed alternately so drift cancels in their ratio.

Both models see the same input tensor under `torch.inference_mode`; CUDA work is synchronised
around every timed forward and wall time comes from `time.perf_counter`. Iterations interleave the
two models (ABBA order), so clock boosts, thermal throttling or a neighbour's load hit both alike.
The speedup is the median of the per-iteration ratios baseline_i / candidate_i: each ratio compares
two forwards run back to back, so drift cancels inside every pair. (The ratio of the two medians does
not cancel bursty load: with half the iterations slowed, each median may land in a different mode.
On a loaded 2-core CPU, identical models gave 0.67-1.32 that way and 0.84-1.09 paired.)
Only the inference graph is timed: an auxiliary head is detached for the measurement and put back.

Models are timed as deployed (`TimingSetup`): conv-BN folded (`engine.fuse`, on by default),
optionally channels-last, `torch.compile`d, and replayed as CUDA graphs on CUDA; each result says
which were used. `fps` and `avg_ms_per_iter` both come from the median; the mean is `mean_ms_per_iter`.
"""

from __future__ import annotations

import copy
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn

from vss_cli.engine.complexity import inference_graph
from vss_cli.errors import ConfigError, VssError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NOISY_IQR = 0.2  # IQR / median of the paired ratios above which a speedup is marked noisy


@dataclass(frozen=True)
class TimingSetup:
    """How a model is prepared for timing (the deployed form) and how long it is timed."""

    dtype: str = "fp32"
    channels_last: bool = False
    fuse_bn: bool = True
    compile: bool = False
    cuda_graphs: bool = False
    warmup: int = 10
    iters: int = 50


@dataclass
class SpeedResult:
    """Latency statistics of one model; times are per iteration (one batch). `fps` (images/s) and
    `avg_ms_per_iter` (the seed's key) both come from the median; the mean is `mean_ms_per_iter`."""

    median_ms: float
    min_ms: float
    max_ms: float
    mean_ms_per_iter: float
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
    fuse_bn: bool = False
    bn_folded: int = 0  # conv-BN pairs merged
    compiled: bool = False
    cuda_graphs: bool = False
    spread: float = 0.0  # IQR / median of the per-iteration times
    noisy: bool = False  # spread > NOISY_IQR: the timing is not to be trusted on its own
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


def timing_setup(opts) -> TimingSetup:
    """The TimingSetup of an options object with eval's timing fields (dtype, channels_last, fuse_bn,
    compile, cuda_graphs, warmup, speed_iters)."""
    return TimingSetup(dtype=opts.dtype, channels_last=opts.channels_last, fuse_bn=opts.fuse_bn,
                       compile=opts.compile, cuda_graphs=opts.cuda_graphs, warmup=opts.warmup, iters=opts.speed_iters)


def check_setup(setup: TimingSetup, device: torch.device) -> torch.dtype:
    """The torch dtype; CUDA graphs off CUDA are bad input (never a silent fallback)."""
    if setup.cuda_graphs and device.type != "cuda":
        raise ConfigError("--cuda-graphs needs a CUDA device: drop it or pass --device cuda")
    if setup.iters < 1 or setup.warmup < 0:
        raise ConfigError(f"speed needs iters >= 1 and warmup >= 0 (got {setup.iters}, {setup.warmup})")
    return check_dtype(setup.dtype, device)


def deployed(model: nn.Module, setup: TimingSetup, device: torch.device) -> tuple[nn.Module, int]:
    """The model as it runs at inference: folded, cast and laid out as `setup` asks (a copy when any
    of that changes it; casting in place loses bits); returns it and the number of folded conv-BN pairs."""
    from vss_cli.engine.fuse import fold_conv_bn

    torch_dtype = DTYPES[setup.dtype]
    folded = 0
    if setup.fuse_bn:
        result = fold_conv_bn(model)
        model, folded = result.model, len(result.pairs)
    on_device = next(model.parameters()).device == device
    if torch_dtype != torch.float32 or setup.channels_last or not on_device:
        model = model if setup.fuse_bn else copy.deepcopy(model)
        model = model.to(device=device, dtype=torch_dtype)
        if setup.channels_last:
            model = model.to(memory_format=torch.channels_last)
    return model, folded


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forward(model: nn.Module, x: torch.Tensor, setup: TimingSetup) -> Callable[[], object]:
    """One inference call: the (compiled) module, or the replay of a captured CUDA graph."""
    fn = torch.compile(model) if setup.compile else model
    if not setup.cuda_graphs:
        return lambda: fn(x)
    stream = torch.cuda.Stream(device=x.device)
    stream.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm up outside the capture, as CUDA graphs require
            fn(x)
    torch.cuda.current_stream(x.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(x)
    return graph.replay


def _timer(call: Callable[[], object], device: torch.device) -> Callable[[], float]:
    def run() -> float:
        _synchronize(device)
        start = time.perf_counter()
        call()
        _synchronize(device)
        return (time.perf_counter() - start) * 1000.0

    return run


def _result(times_ms: list[float], *, setup: TimingSetup, batch: int, input_size: tuple[int, int],
            device: torch.device, bn_folded: int) -> SpeedResult:
    median = statistics.median(times_ms)
    fps = batch * 1000.0 / median
    return SpeedResult(
        median_ms=median, min_ms=min(times_ms), max_ms=max(times_ms), mean_ms_per_iter=statistics.fmean(times_ms),
        fps=fps, avg_ms_per_iter=median, pixels_per_second=fps * input_size[0] * input_size[1],
        iterations=len(times_ms), warmup=setup.warmup, batch=batch, input_size=tuple(input_size),
        device=device_name(device), dtype=setup.dtype, channels_last=setup.channels_last, fuse_bn=setup.fuse_bn,
        bn_folded=bn_folded, compiled=setup.compile, cuda_graphs=setup.cuda_graphs,
        spread=iqr_over_median(times_ms), noisy=iqr_over_median(times_ms) > NOISY_IQR, times_ms=list(times_ms),
    )


def _device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def measure_speed_pair(baseline: nn.Module, candidate: nn.Module, *, input_size: tuple[int, int], batch: int,
                       device: str | torch.device, seed: int = 0, setup: TimingSetup | None = None,
                       **timing: Any) -> tuple[SpeedResult, SpeedResult]:
    """Time `baseline` and `candidate` on one shared input, alternating iterations; returns both results.

    `times_ms[i]` of the two results were measured back to back (see `speedups`). The timing is `setup`,
    or a `TimingSetup` of the `timing` keywords (dtype, channels_last, fuse_bn, compile, cuda_graphs,
    warmup, iters; its defaults otherwise). The callers' models are left as they were.
    """
    if setup is not None and timing:
        raise TypeError("measure_speed_pair takes setup= or timing keywords, not both")
    setup = setup or TimingSetup(**timing)
    device = _device(device)
    torch_dtype = check_setup(setup, device)
    if batch < 1:
        raise ConfigError(f"speed needs batch >= 1 (got {batch})")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *input_size, generator=gen).to(device=device, dtype=torch_dtype)
    if setup.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times: tuple[list[float], list[float]] = ([], [])
    with inference_graph(baseline), inference_graph(candidate):
        ready = [deployed(m, setup, device) for m in (baseline, candidate)]  # tracing needs autograd
    with inference_graph(ready[0][0]), inference_graph(ready[1][0]), torch.inference_mode():
        timers = [_timer(_forward(m, x, setup), device) for m, _ in ready]
        for _ in range(setup.warmup):
            timers[0]()
            timers[1]()
        for i in range(setup.iters):
            order = (0, 1) if i % 2 == 0 else (1, 0)  # ABBA: neither model always runs first
            for k in order:
                times[k].append(timers[k]())
    kw = dict(setup=setup, batch=batch, input_size=tuple(input_size), device=device)
    return _result(times[0], bn_folded=ready[0][1], **kw), _result(times[1], bn_folded=ready[1][1], **kw)


def paired_ratios(baseline: SpeedResult, candidate: SpeedResult) -> list[float]:
    """baseline_i / candidate_i for every pair of back-to-back iterations."""
    return [b / c for b, c in zip(baseline.times_ms, candidate.times_ms, strict=True)]


def iqr_over_median(values: list[float]) -> float:
    """Interquartile range divided by the median (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q3 - q1) / statistics.median(values)


def speedups(baseline: SpeedResult, candidate: SpeedResult) -> dict[str, float | bool]:
    """The seed's `speedup_latency` and `speedup_fps`: the median of the paired ratios baseline_i /
    candidate_i (for one batch, latency ratio = throughput ratio, so the two are equal, as in the seed's
    example), plus `speedup_of_medians` = baseline median / candidate median for reference, and the
    spread: `speedup_iqr` = IQR / median of the paired ratios, `speedup_noisy` when it exceeds 0.2."""
    ratios = paired_ratios(baseline, candidate)
    paired = statistics.median(ratios)
    iqr = iqr_over_median(ratios)
    return {"speedup_latency": paired, "speedup_fps": paired,
            "speedup_of_medians": baseline.median_ms / candidate.median_ms,
            "speedup_iqr": iqr, "speedup_noisy": iqr > NOISY_IQR}


class SlowerThanParent(VssError):
    """`--require-speedup` and the pruned model is not faster than its parent: the run failed (exit 1)."""

    exit_code = 1


@dataclass
class ParentComparison:
    """A pruned model timed against its parent (paired, as deployed) on the eval device."""

    speedup: float
    speedup_iqr: float
    noisy: bool
    parent_ms: float
    child_ms: float
    iters: int

    @property
    def slower_than_parent(self) -> bool:
        return self.speedup <= 1.0

    def metrics(self) -> dict[str, float]:
        return {"parent_speedup": self.speedup, "parent_speedup_iqr": self.speedup_iqr,
                "parent_speedup_noisy": float(self.noisy), "parent_latency_ms": self.parent_ms,
                "pruned_latency_ms": self.child_ms, "slower_than_parent": float(self.slower_than_parent)}

    def message(self) -> str:
        # only the paired ratio: the two medians come from different iterations and can disagree with it
        noisy = f"; noisy: IQR/median {self.speedup_iqr:.2f}" if self.noisy else ""
        return (f"the pruned model runs x{self.speedup:.3f} against its parent (median of {self.iters} "
                f"paired iterations{noisy})")


def compare_to_parent(parent: nn.Module, child: nn.Module, *, input_size: tuple[int, int], batch: int,
                      device: str | torch.device, setup: TimingSetup) -> ParentComparison:
    """Short paired timing of a pruned model against the model it was pruned from."""
    base, cand = measure_speed_pair(parent, child, input_size=input_size, batch=batch, device=device, setup=setup)
    ups = speedups(base, cand)
    return ParentComparison(speedup=ups["speedup_latency"], speedup_iqr=ups["speedup_iqr"],
                            noisy=ups["speedup_noisy"], parent_ms=base.median_ms, child_ms=cand.median_ms,
                            iters=setup.iters)
