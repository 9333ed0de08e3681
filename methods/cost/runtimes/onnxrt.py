"""``onnxruntime``: the network exported to ONNX and run in an ONNX Runtime ``InferenceSession``.

Whole networks and single-layer table entries go through the same path: the module is exported
in memory (:func:`onnx_bytes`), loaded into a session with the thread settings of
:func:`session_settings`, and one timed step is one ``run_with_iobinding`` call on inputs bound
once (no per-step copies). The CPU execution provider runs on ``cpu``; ``cuda`` needs
``onnxruntime-gpu`` (``CUDAExecutionProvider``). ONNX Runtime's own graph optimisations are on
(``ORT_ENABLE_ALL``): it folds BatchNorm into the preceding convolution and fuses ReLUs, which
isolated-layer entries cannot see; the table's calibration against whole exported networks
absorbs that (docs/METHODS.md).

``onnxruntime`` is imported only when this runtime is used: ``methods/`` imports without it.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from prunesearch.methods.cost.runtimes import LatencyRuntime, Step

__all__ = ["ONNX_OPSET", "OnnxRuntimeRuntime", "onnx_bytes", "session_settings"]

#: Opset of the in-memory exports timed here (the same as ``prunesearch export --format onnx``).
ONNX_OPSET = 18

_INSTALL = "pip install onnxruntime (onnxruntime-gpu for CUDA)"


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ValueError(f"hardware.runtime=onnxruntime needs the onnxruntime package: "
                         f"{_INSTALL}") from None
    return onnxruntime


def _provider(device: Any) -> str:
    import torch

    kind = torch.device(device).type
    if kind == "cpu":
        return "CPUExecutionProvider"
    if kind == "cuda":
        return "CUDAExecutionProvider"
    raise ValueError("hardware.runtime=onnxruntime runs on cpu or cuda, got "
                     f"device={str(device)!r}")


def session_settings(device: Any, threads: int) -> dict[str, Any]:
    """What an ONNX Runtime timing session is set up with (recorded with every table).

    ``intra_op_num_threads`` is ``hardware.threads`` (ORT's own pool, not torch's);
    ``inter_op_num_threads`` 1 and sequential execution, as one inference request runs.
    """
    ort = _ort()
    return {"onnxruntime": ort.__version__, "provider": _provider(device),
            "intra_op_num_threads": int(threads), "inter_op_num_threads": 1,
            "execution_mode": "sequential", "graph_optimization_level": "all",
            "opset": ONNX_OPSET}


def onnx_bytes(module: Any, inputs: Sequence[Any]) -> bytes:
    """``module`` on ``inputs`` exported to an in-memory ONNX model (fixed shapes).

    The TorchScript-based exporter is used first (about 40 ms a layer, against seconds for the
    dynamo exporter: a table has hundreds of entries); where it is unavailable or fails, the
    dynamo exporter.
    """
    import torch

    args = tuple(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation and progress chatter
        try:
            buffer = io.BytesIO()
            torch.onnx.export(module, args, buffer, dynamo=False, opset_version=ONNX_OPSET)
            return buffer.getvalue()
        except Exception:  # noqa: BLE001 - fall back to the other exporter
            program = torch.onnx.export(module, args, dynamo=True, opset_version=ONNX_OPSET,
                                        verbose=False)
            return program.model_proto.SerializeToString()


@functools.cache
def _available() -> tuple[str, ...]:
    return tuple(_ort().get_available_providers())


class OnnxRuntimeRuntime(LatencyRuntime):
    """ONNX Runtime (CPU execution provider; CUDA provider where installed)."""

    name = "onnxruntime"
    host_timed = True  # session.run returns when the work is done: wall clock on every device

    def check(self, device: Any) -> None:
        provider = _provider(device)
        if provider not in _available():
            raise ValueError(f"hardware.runtime=onnxruntime on {str(device)!r} needs ONNX "
                             f"Runtime's {provider}, which this install lacks ({_INSTALL})")

    def settings(self, device: Any, threads: int) -> dict[str, Any]:
        return {"runtime": self.name, **session_settings(device, threads)}

    def session(self, module: Any, inputs: Sequence[Any], *, device: Any,
                threads: int) -> Any:
        """An ``InferenceSession`` of ``module`` exported on ``inputs``."""
        ort = _ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        return ort.InferenceSession(onnx_bytes(module, inputs), sess_options=options,
                                    providers=[_provider(device)])

    def prepare_call(self, module: Any, inputs: Sequence[Any], *, device: Any,
                     threads: int) -> Step:
        import torch

        if any(t.dtype != torch.float32 for t in inputs if t.is_floating_point()):
            raise ValueError("hardware.runtime=onnxruntime times float32 networks; set "
                             "hardware.dtype=float32")
        self.check(device)
        ort = _ort()
        session = self.session(module, inputs, device=device, threads=threads)
        dev = torch.device(device)
        kind, index = ("cuda", dev.index or 0) if dev.type == "cuda" else ("cpu", 0)
        binding = session.io_binding()
        # Inputs are bound once, on the device (no copy per step); outputs are allocated there.
        keep = []
        for meta, tensor in zip(session.get_inputs(), inputs):
            value = ort.OrtValue.ortvalue_from_numpy(tensor.detach().cpu().numpy(), kind, index)
            keep.append(value)
            binding.bind_ortvalue_input(meta.name, value)
        for meta in session.get_outputs():
            binding.bind_output(meta.name, kind, index)

        def step() -> None:
            session.run_with_iobinding(binding)

        step.keep = keep  # type: ignore[attr-defined]  # the bound inputs live with the step
        return step

    def prepare_module(self, module: Any) -> Callable[..., Any]:
        """A callable running ``module`` in ONNX Runtime on CPU tensors (one thread)."""
        import torch

        cache: dict[tuple, Any] = {}

        def forward(*xs: Any) -> Any:
            key = tuple(tuple(x.shape) for x in xs)
            if key not in cache:
                cache[key] = self.session(module, xs, device="cpu", threads=1)
            session = cache[key]
            feeds = {m.name: x.detach().cpu().numpy() for m, x in zip(session.get_inputs(), xs)}
            return torch.from_numpy(session.run(None, feeds)[0])

        return forward


def available() -> bool:
    """Whether ``onnxruntime`` can be imported here."""
    return importlib.util.find_spec("onnxruntime") is not None
