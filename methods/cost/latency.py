"""Measured latency: one timing harness for whole networks and for single layers.

The protocol: ``model.eval()`` + ``torch.inference_mode()``, a fixed
intra-op thread count, warm-up runs, then ``repeats`` timed runs reported as median and p90.
On CUDA: ``cudnn.benchmark`` on, every run timed with CUDA events and the device synchronised;
what differs between runtimes (``eager``, ``cuda-graph`` replays, ``torch.compile``) is one
:class:`~prunesearch.methods.cost.runtimes.LatencyRuntime` per runtime, looked up by name in
:data:`~prunesearch.methods.cost.runtimes.RUNTIMES`.
Every figure carries the device name, runtime, dtype, batch size, threads and torch version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from prunesearch.methods.cost.runtimes import RUNTIMES, runtime_entry
from prunesearch.methods.cost.runtimes.cuda_graph import GRAPH_COPIES
from prunesearch.methods.cost.specs import LayerSpec
from prunesearch.methods.pruning.layers import example_inputs

__all__ = [
    "DTYPES",
    "GRAPH_COPIES",
    "RUNTIMES",
    "STATISTICS",
    "LatencyResult",
    "device_name",
    "measure_callable",
    "measure_latency",
    "measure_spec",
    "spec_module",
    "statistic",
    "torch_dtype",
]

#: Fewest timed runs when a time budget cuts timing short (``max_time_ms``).
MIN_REPEATS = 5

#: ``hardware.dtype`` names (the config's choices) and their torch dtypes.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(dtype: str) -> torch.dtype:
    """``torch.dtype`` of a ``hardware.dtype`` name.

    Raises:
        ValueError: unknown dtype name.
    """
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(
            f"dtype={dtype!r} is not supported; choose one of: {', '.join(DTYPES)}"
        ) from None


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: str | torch.device) -> str:
    """Human-readable name of the device that latency is measured on (part of table keys)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return _cpu_model()
    return str(device)


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    """One latency figure with everything needed to interpret it.

    Attributes:
        median_ms: Median of the timed runs, milliseconds per batch.
        p90_ms: 90th percentile of the timed runs.
        mean_ms: Mean of the timed runs.
        min_ms: Fastest timed run.
        repeats: Number of timed runs.
        device: Device name (CPU model or GPU name).
        runtime: ``eager``, ``cuda-graph``, ``compile`` or ``onnxruntime``.
        dtype: ``float32``, ``float16`` or ``bfloat16``.
        batch_size: Inputs per run.
        threads: torch intra-op threads during timing.
        torch_version: ``torch.__version__``.
        peak_memory_mb: CUDA memory allocated at peak by the timed module (None elsewhere).
        p25_ms: 25th percentile of the timed runs.
        p10_ms: 10th percentile of the timed runs.
    """

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    repeats: int
    device: str
    runtime: str
    dtype: str
    batch_size: int
    threads: int
    torch_version: str
    peak_memory_mb: float | None = None
    p25_ms: float = float("nan")
    p10_ms: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


#: Statistics of a timing's runs a latency table may be built from (``hardware.latency_statistic``).
STATISTICS = ("median", "p25", "p10", "min")


def statistic(result: LatencyResult, name: str) -> float:
    """The ``name`` statistic (one of :data:`STATISTICS`) of a timing, in milliseconds."""
    fields = {"median": "median_ms", "p25": "p25_ms", "p10": "p10_ms", "min": "min_ms"}
    if name not in fields:
        raise ValueError(f"latency statistic {name!r} is not one of: {', '.join(STATISTICS)}")
    return float(getattr(result, fields[name]))


@contextlib.contextmanager
def _threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _validate(runtime: str, device: torch.device, warmup: int, repeats: int, threads: int,
              batch_size: int) -> None:
    runtime_entry(runtime).check(device)
    if warmup < 0:
        raise ValueError(f"warmup={warmup} must be >= 0")
    if repeats < 3:
        raise ValueError(f"repeats={repeats} must be >= 3 (median and p90 are reported)")
    if threads < 1:
        raise ValueError(f"threads={threads} must be >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")


def measure_callable(
    fn: Callable[[], Any],
    *,
    device: str | torch.device = "cpu",
    runtime: str = "eager",
    dtype: str = "float32",
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 100,
    measure_memory: bool = False,
    memory_baseline: int = 0,
    max_time_ms: float | None = None,
) -> LatencyResult:
    """Time a zero-argument callable (its inputs are closed over) with the shared protocol.

    ``runtime='cuda-graph'`` captures ``fn`` once into a CUDA graph after warm-up and times
    replays; ``'compile'`` expects ``fn`` to be compiled already (see :func:`measure_latency`).
    With ``measure_memory`` on CUDA, ``peak_memory_mb`` is the allocator's peak during the timed
    runs minus ``memory_baseline`` bytes (what was allocated before the caller set up).
    With ``max_time_ms`` (CPU only) timing stops once the timed runs add up to that much and at
    least :data:`MIN_REPEATS` were made, and warm-up once it took a quarter of that: slow layers
    need fewer runs for a stable median.
    """
    device = torch.device(device)
    _validate(runtime, device, warmup, repeats, threads, batch_size)
    entry = runtime_entry(runtime)
    on_cuda = device.type == "cuda"
    cuda = on_cuda and not entry.host_timed  # CUDA events; else the host clock
    times: list[float] = []
    peak_mb: float | None = None
    with _threads(threads), torch.inference_mode():
        if on_cuda:
            torch.backends.cudnn.benchmark = True
            if device.index is not None:
                torch.cuda.set_device(device)
        step, warm = entry.prepare_step(fn, device=device, warmup=warmup)
        warm_start = time.perf_counter()
        for i in range(warm):
            step()
            # With a time budget, slow layers warm up in a quarter of it (at least one run).
            if (max_time_ms is not None and not cuda
                    and (time.perf_counter() - warm_start) * 1000.0 > max_time_ms / 4):
                break
        if cuda:
            torch.cuda.synchronize(device)
            if measure_memory:
                torch.cuda.reset_peak_memory_stats(device)
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
            for start, end in zip(starts, ends):
                start.record()
                step()
                end.record()
            torch.cuda.synchronize(device)
            times = [start.elapsed_time(end) for start, end in zip(starts, ends)]
            if measure_memory:
                peak_mb = (torch.cuda.max_memory_allocated(device) - memory_baseline) / 2**20
        else:
            total_ms = 0.0
            for _ in range(repeats):
                begin = time.perf_counter()
                step()
                times.append((time.perf_counter() - begin) * 1000.0)
                total_ms += times[-1]
                if (max_time_ms is not None and total_ms > max_time_ms
                        and len(times) >= MIN_REPEATS):
                    break
    return LatencyResult(
        median_ms=float(statistics.median(times)),
        p90_ms=float(_percentile(times, 0.9)),
        mean_ms=float(statistics.fmean(times)),
        min_ms=float(min(times)),
        repeats=len(times),
        device=device_name(device),
        runtime=runtime,
        dtype=dtype,
        batch_size=batch_size,
        threads=threads,
        torch_version=torch.__version__,
        peak_memory_mb=peak_mb,
        p25_ms=float(_percentile(times, 0.25)),
        p10_ms=float(_percentile(times, 0.1)),
    )


def measure_latency(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str | torch.device = "cpu",
    runtime: str = "eager",
    dtype: str = "float32",
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 100,
    measure_memory: bool = False,
) -> LatencyResult:
    """End-to-end latency of ``module`` on one batch, with the shared protocol.

    The module is copied to ``device`` and ``dtype`` (the caller's module is left as it was
    only if it already lives there: pass a copy if it must not move) and put in eval mode.

    Args:
        module: The network to time.
        input_shape: Shape of one sample, e.g. ``(3, 32, 32)``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        runtime: ``eager``, ``cuda-graph`` (CUDA only), ``compile`` (``torch.compile``) or
            ``onnxruntime`` (the module exported to ONNX, in an ONNX Runtime session).
        dtype: ``float32``, ``float16`` or ``bfloat16``.
        batch_size: Samples per timed run.
        threads: torch intra-op threads while timing.
        warmup: Untimed runs first (with ``compile`` the first one compiles).
        repeats: Timed runs (>= 3).
        measure_memory: On CUDA, also report the peak memory the module, its input and its
            forward passes allocate (``max_memory_allocated`` minus what was allocated before;
            a module already on the device is then not counted).

    Returns:
        The median/p90 figure with device, runtime, dtype, batch, threads and torch version.
    """
    device = torch.device(device)
    _validate(runtime, device, warmup, repeats, threads, batch_size)
    baseline = 0
    if measure_memory and device.type == "cuda":
        # The module's weights, its input and its forward passes count; what else the process
        # holds on the device does not.
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
    module = module.to(device=device, dtype=torch_dtype(dtype)).eval()
    x = example_inputs(module, (batch_size, *input_shape), random=True,
                       generator=torch.Generator().manual_seed(0), dtype=torch_dtype(dtype),
                       device=device)
    call = runtime_entry(runtime).prepare_call(module, [x], device=device, threads=threads)
    return measure_callable(
        call, device=device, runtime=runtime, dtype=dtype, batch_size=batch_size,
        threads=threads, warmup=warmup, repeats=repeats, measure_memory=measure_memory,
        memory_baseline=baseline,
    )


class _Add(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)


class _GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1)


class _GlobalAvgPool1d(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool1d(x, 1)


#: Sequence (NCL) versions of the ops whose module depends on the spatial rank; the others
#: (bn, relu, add, flatten) cost the same on an (N, C, L, 1) tensor and keep their module.
_ONE_D: dict[str, Callable[[LayerSpec], nn.Module]] = {
    "conv": lambda s: nn.Conv1d(s.in_channels, s.out_channels, s.kernel, s.stride, s.padding,
                                groups=s.groups, bias=s.bias, dilation=s.dilation),
    "maxpool": lambda s: nn.MaxPool1d(s.kernel, s.stride, s.padding),
    "avgpool": lambda s: nn.AvgPool1d(s.kernel, s.stride, s.padding),
    "gap": lambda s: _GlobalAvgPool1d(),
    "deconv": lambda s: _deconv(s, nn.ConvTranspose1d),
}


def _deconv(spec: LayerSpec, kind: type[nn.Module]) -> nn.Module:
    """The transposed conv of ``spec``, its ``output_padding`` read off the recorded sizes."""
    dims = 1 if kind is nn.ConvTranspose1d else 2

    def axes(value: int | tuple[int, int]) -> tuple[int, ...]:
        return tuple(value) if isinstance(value, tuple) else (int(value),) * dims

    k, st, pd, dil = axes(spec.kernel), axes(spec.stride), axes(spec.padding), axes(spec.dilation)
    extra = tuple(max(0, o - ((i - 1) * s - 2 * p + d * (kk - 1) + 1))
                  for i, o, s, p, d, kk in zip(spec.in_hw, spec.out_hw, st, pd, dil, k))
    return kind(spec.in_channels, spec.out_channels, k, st, pd, output_padding=extra,
                groups=spec.groups, bias=spec.bias, dilation=dil)


def spec_module(spec: LayerSpec) -> tuple[nn.Module, list[tuple[int, ...]]]:
    """A stand-alone module computing one layer spec, and the shapes of its inputs.

    Raises:
        ValueError: unknown ``spec.op``.
    """
    b, cin, cout = spec.batch, spec.in_channels, spec.out_channels
    x_shape = (b, cin, *spec.in_hw)
    if spec.dims == 1 and spec.op in _ONE_D:
        return _ONE_D[spec.op](spec), [(b, cin, spec.in_hw[0])]
    if spec.op == "conv":
        mod: nn.Module = nn.Conv2d(cin, cout, spec.kernel, spec.stride, spec.padding,
                                   groups=spec.groups, bias=spec.bias, dilation=spec.dilation)
    elif spec.op == "deconv":
        mod = _deconv(spec, nn.ConvTranspose2d)
    elif spec.op == "embed":
        return nn.Embedding(int(spec.kernel), cout), [(b, spec.in_hw[0])]
    elif spec.op == "bn":
        mod = nn.BatchNorm2d(cout)
    elif spec.op == "relu":
        mod = nn.ReLU()  # out of place, as our models call F.relu
    elif spec.op == "add":
        return _Add(), [x_shape, x_shape]
    elif spec.op == "shortcut":
        # The module the pruned CIFAR ResNets run (subsample + channel gather with zero
        # padding), at the option-A index for these widths: its cost does not depend on which
        # channels are gathered.
        from prunesearch.methods.models.cifar_resnet import ChannelGatherShortcut

        mod = ChannelGatherShortcut(cin, cout, spec.stride)
    elif spec.op == "maxpool":
        mod = nn.MaxPool2d(spec.kernel, spec.stride, spec.padding)
    elif spec.op == "avgpool":
        mod = nn.AvgPool2d(spec.kernel, spec.stride, spec.padding)
    elif spec.op == "gap":
        mod = _GlobalAvgPool()
    elif spec.op == "flatten":
        mod = _Flatten()
        x_shape = (b, cin, *spec.in_hw)
    elif spec.op == "linear":
        mod = nn.Linear(cin, cout, bias=spec.bias)
        x_shape = (b, cin)
    else:
        raise ValueError(f"LayerSpec.op={spec.op!r} has no timing module")
    return mod, [x_shape]


def measure_spec(
    spec: LayerSpec,
    *,
    device: str | torch.device = "cpu",
    runtime: str = "eager",
    dtype: str = "float32",
    threads: int = 1,
    warmup: int = 5,
    repeats: int = 30,
    max_time_ms: float | None = None,
) -> LatencyResult:
    """Latency of one layer in isolation (a latency-table entry).

    ``compile`` is timed eagerly here: compiling hundreds of single layers would take far longer
    than the search, and the table's calibration against compiled end-to-end timings absorbs
    the difference (documented in docs/METHODS.md). ``cuda-graph`` captures
    :data:`GRAPH_COPIES` copies of the layer in one graph and reports the time per copy.
    """
    device = torch.device(device)
    mod, shapes = spec_module(spec)
    tdtype = torch_dtype(dtype)
    mod = mod.to(device=device, dtype=tdtype).eval()
    gen = torch.Generator().manual_seed(0)
    inputs = [example_inputs(mod, s, random=True, generator=gen, dtype=tdtype, device=device)
              for s in shapes]
    layer_runtime = runtime_entry(runtime_entry(runtime).layer_runtime)
    copies = layer_runtime.layer_copies
    call = layer_runtime.prepare_call(mod, inputs, device=device, threads=threads)

    def run() -> None:
        for _ in range(copies):
            call()

    with warnings.catch_warnings():
        # A view-only layer (flatten) launches no kernel: its graph is empty, which is correct.
        warnings.filterwarnings("ignore", message="The CUDA Graph is empty")
        result = measure_callable(
            run, device=device, runtime=layer_runtime.name, dtype=dtype, batch_size=spec.batch,
            threads=threads, warmup=warmup, repeats=repeats, max_time_ms=max_time_ms,
        )
    if copies == 1:
        return result
    return dataclasses.replace(result, median_ms=result.median_ms / copies,
                               p90_ms=result.p90_ms / copies, mean_ms=result.mean_ms / copies,
                               min_ms=result.min_ms / copies, p25_ms=result.p25_ms / copies,
                               p10_ms=result.p10_ms / copies)
