"""Latency runtimes by name (the config's ``hardware.runtime``): how a network is prepared for
timing, how one timed step runs, and which runtime times a single-layer table entry.

| name         | module                | whole network                 | table entries            |
|--------------|-----------------------|-------------------------------|--------------------------|
| `eager`      | :mod:`.eager`         | the module as it is           | eager                    |
| `cuda-graph` | :mod:`.cuda_graph`    | one captured CUDA graph       | 10 copies per graph      |
| `compile`    | :mod:`.compiled`      | ``torch.compile`` output      | eager (see METHODS.md)   |
| `onnxruntime`| :mod:`.onnxrt`        | ONNX export in ORT session    | each layer exported      |

:data:`RUNTIMES` is the only list of runtime names: the config validates ``hardware.runtime``
against it and :mod:`prunesearch.methods.cost.latency` dispatches through it. Adding a runtime
is one module defining a :class:`LatencyRuntime` plus one line below (``onnxruntime`` was
added so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prunesearch.methods.errors import lookup

__all__ = ["RUNTIMES", "LatencyRuntime", "register_runtime", "runtime_entry", "runtime_names"]

Step = Callable[[], Any]


class LatencyRuntime:
    """One inference runtime latency is measured in. Subclasses override what differs.

    Attributes:
        name: The ``hardware.runtime`` value.
        layer_runtime: Name of the runtime that times single-layer latency-table entries
            (``compile`` times them eagerly: compiling hundreds of layers would outlast the
            search; the table's calibration absorbs the difference).
        layer_copies: Copies of a layer run per timed step of a table entry (the step's time is
            divided by it): shares a fixed per-step launch cost that a whole network pays once.
        host_timed: Time steps with the host clock on every device (the step itself waits for
            its work, e.g. an ONNX Runtime session), not with CUDA events.
    """

    name: str = ""
    layer_runtime: str = ""
    layer_copies: int = 1
    host_timed: bool = False

    def settings(self, device: Any, threads: int) -> dict[str, Any]:
        """The runtime's settings while timing (recorded with every latency table)."""
        return {"runtime": self.name, "torch_threads": int(threads)}

    def prepare_call(self, module: Any, inputs: Any, *, device: Any, threads: int) -> Step:
        """The zero-argument forward of ``module`` on ``inputs`` (a sequence of tensors already
        on the device) that :meth:`prepare_step` then turns into the timed step."""
        forward = self.prepare_module(module)
        return lambda: forward(*inputs)

    def check(self, device: Any) -> None:
        """Raise ``ValueError`` if this runtime cannot run on ``device`` (a ``torch.device``).

        Called before anything is timed.
        """

    def prepare_module(self, module: Any) -> Callable[..., Any]:
        """The callable timed for a whole network (called once per end-to-end timing, after
        the module is on its device and dtype, in eval mode)."""
        return module

    def prepare_step(self, fn: Step, *, device: Any, warmup: int) -> tuple[Step, int]:
        """Turn the zero-argument forward ``fn`` into the timed step.

        Called once per timing, inside ``torch.inference_mode``, before the warm-up runs.

        Returns:
            The step to time and how many untimed warm-up runs of it are still due.
        """
        return fn, warmup


RUNTIMES: dict[str, LatencyRuntime] = {}


def register_runtime(runtime: LatencyRuntime) -> LatencyRuntime:
    """Add ``runtime`` to :data:`RUNTIMES` under ``runtime.name`` (a name is registered once)."""
    if not runtime.name:
        raise ValueError("a latency runtime needs a name")
    if runtime.name in RUNTIMES and RUNTIMES[runtime.name] is not runtime:
        raise ValueError(f"latency runtime {runtime.name!r} is already registered")
    runtime.layer_runtime = runtime.layer_runtime or runtime.name
    RUNTIMES[runtime.name] = runtime
    return runtime


def runtime_names() -> tuple[str, ...]:
    """Registered runtime names, in registration order (the config's choices)."""
    return tuple(RUNTIMES)


def runtime_entry(name: str) -> LatencyRuntime:
    """The runtime registered as ``name``.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid ones).
    """
    return lookup(RUNTIMES, name, key="hardware.runtime", kind="latency runtime")


# The registry: one line per runtime.
from prunesearch.methods.cost.runtimes.compiled import CompileRuntime  # noqa: E402
from prunesearch.methods.cost.runtimes.cuda_graph import CudaGraphRuntime  # noqa: E402
from prunesearch.methods.cost.runtimes.eager import EagerRuntime  # noqa: E402
from prunesearch.methods.cost.runtimes.onnxrt import OnnxRuntimeRuntime  # noqa: E402

register_runtime(EagerRuntime())
register_runtime(CudaGraphRuntime())
register_runtime(CompileRuntime())
register_runtime(OnnxRuntimeRuntime())
