"""Write a pruned network as a deployable file and prove the file computes what was evaluated.

Formats (:data:`FORMATS`):

``pt``
    ``torch.save`` of the ``nn.Module`` (loading needs PyTorch and prunesearch, whose classes
    the pickle names), reloaded with ``torch.load(weights_only=False)``.
``torchscript``
    ``torch.jit.trace`` of the module, reloaded with ``torch.jit.load``; needs PyTorch only.
    (TorchScript is deprecated upstream but still the one PyTorch-native file that loads
    without the defining Python code.)
``onnx``
    ``torch.onnx.export(..., dynamo=True)`` at opset :data:`ONNX_OPSET` with only the batch
    axis dynamic, checked with ``onnx.checker`` and reloaded in ONNX Runtime's
    ``InferenceSession`` (CPU execution provider); needs only ``onnxruntime`` to run.

Every export is checked before it is kept: the file is written under a temporary name in the
output's folder, reloaded in its own runtime, and its outputs on a seeded example batch (and on
a batch of one, which proves the batch axis is not baked in) are compared with the PyTorch
module's within :class:`Tolerance`. Only a file that passes replaces ``out``; a file that
fails is deleted and :class:`ExportCheckError` says by how much it missed.

``onnx``/``onnxruntime`` (and ``torch``) are imported only when used, so this module, and the
CLI that lists :data:`FORMATS`, import without them.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunesearch.methods.errors import PrunesearchError, UsageError
from prunesearch.methods.io import atomic_path

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

__all__ = [
    "DEFAULT_TOLERANCE",
    "FORMATS",
    "MAX_CHECK_BATCH",
    "ONNX_OPSET",
    "ExportCheck",
    "ExportCheckError",
    "Tolerance",
    "export_network",
]

#: Formats ``prunesearch export --format`` accepts; the first is the default.
FORMATS = ("pt", "torchscript", "onnx")
#: ONNX opset written by the exporter (opset 18 is the dynamo exporter's well-tested default and
#: loads in every ONNX Runtime since 1.14).
ONNX_OPSET = 18
#: The example batch is the run's batch size capped here, so checking a large-batch run's
#: export costs a second, not a minute, on a CPU.
MAX_CHECK_BATCH = 64
#: Names of the graph's input and output in the ONNX file.
ONNX_INPUT_NAME = "input"
ONNX_OUTPUT_NAME = "logits"


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How far a reloaded file's outputs may be from the PyTorch module's (fp32 on the CPU):
    ``|exported - torch| <= atol + rtol * |torch|`` elementwise, as ``numpy.allclose``.

    Attributes:
        atol: Absolute tolerance.
        rtol: Relative tolerance.
    """

    atol: float = 1e-4
    rtol: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"Tolerance.{name} must be a number >= 0, got {value!r}")

    def __str__(self) -> str:
        return f"atol {self.atol:g}, rtol {self.rtol:g}"


DEFAULT_TOLERANCE = Tolerance()


class ExportCheckError(PrunesearchError, RuntimeError):
    """The exported file, reloaded in its runtime, does not reproduce the PyTorch outputs (or
    cannot be reloaded at all); nothing was written to the output path."""


@dataclasses.dataclass(frozen=True)
class ExportCheck:
    """What was written and how it was checked.

    Attributes:
        format: One of :data:`FORMATS`.
        path: The file written.
        runtime: Where the file was reloaded (e.g. ``onnxruntime 1.32.0 (CPUExecutionProvider)``).
        batch_sizes: Batch sizes the outputs were compared at.
        max_abs_diff: Largest elementwise ``|exported - torch|`` over those batches.
        tolerance: The tolerance the comparison used.
        opset: ONNX opset of an ``onnx`` file, else ``None``.
    """

    format: str
    path: Path
    runtime: str
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    tolerance: Tolerance
    opset: int | None = None

    def describe(self) -> str:
        """One line for the CLI: format, runtime, the measured difference and the tolerance."""
        opset = f" opset {self.opset}," if self.opset is not None else ""
        batches = " and ".join(str(b) for b in self.batch_sizes)
        return (f"{self.format}{opset} reloaded in {self.runtime}: outputs match PyTorch at batch "
                f"{batches} (max |diff| {self.max_abs_diff:.2e}; {self.tolerance})")


def export_network(module: nn.Module, out: str | os.PathLike[str], *, format: str = "pt",
                   input_shape: Sequence[int], batch_size: int = 1, seed: int = 0,
                   tolerance: Tolerance = DEFAULT_TOLERANCE) -> ExportCheck:
    """Write ``module`` to ``out`` in ``format``, after checking the file reproduces it.

    Args:
        module: The network (put in eval mode and on the CPU in fp32 here).
        out: Output file; replaced atomically, never left half-written.
        format: One of :data:`FORMATS`.
        input_shape: One example's shape, e.g. ``(3, 32, 32)``.
        batch_size: The run's batch size; the example batch is this, capped at
            :data:`MAX_CHECK_BATCH` and at least 2 (the exporter treats a batch of 1 as a
            constant), and a batch of 1 is checked as well.
        seed: Seed of the example batch (standard normal).
        tolerance: Allowed difference between the file's outputs and the module's.

    Returns:
        The :class:`ExportCheck` of the file written.

    Raises:
        UsageError: ``format`` is unknown or the module has no usable input shape.
        ExportCheckError: the file cannot be reloaded or its outputs differ beyond
            ``tolerance`` (``out`` is then left as it was).
    """
    if format not in FORMATS:
        raise UsageError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
    shape = tuple(int(d) for d in input_shape)
    if not shape or min(shape) < 1:
        raise UsageError(f"input_shape must be positive dimensions, got {list(input_shape)}")
    import torch

    module = module.to("cpu", torch.float32).eval()
    check_batch = max(2, min(int(batch_size), MAX_CHECK_BATCH))
    generator = torch.Generator().manual_seed(int(seed))
    from prunesearch.methods.pruning.layers import example_inputs

    example = example_inputs(module, (check_batch, *shape), random=True, generator=generator)
    single = example_inputs(module, (1, *shape), random=True, generator=generator)
    with torch.no_grad():
        expected = [module(example).numpy(), module(single).numpy()]

    out = Path(out)
    writer, loader = _FORMATS[format]
    # A temp file in the same folder replaces ``out`` only once the check has passed.
    with atomic_path(out, unique=True) as tmp:
        try:
            writer(module, example, tmp)
        except PrunesearchError:
            raise
        except Exception as exc:  # a network the exporter cannot handle
            raise ExportCheckError(f"{format} export failed ({type(exc).__name__}: "
                                   f"{_first_line(exc)}); not written. Try another --format "
                                   "(pt always works)") from exc
        runtime, run, opset = loader(tmp)
        actual = [run(example.numpy()), run(single.numpy())]
        max_diff = _compare(format, expected, actual, tolerance, (check_batch, 1))
    return ExportCheck(format=format, path=out, runtime=runtime, batch_sizes=(check_batch, 1),
                       max_abs_diff=max_diff, tolerance=tolerance, opset=opset)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _compare(format: str, expected: Sequence[np.ndarray], actual: Sequence[Any],
             tolerance: Tolerance, batch_sizes: Sequence[int]) -> float:
    import numpy as np

    worst = 0.0
    for want, got, batch in zip(expected, actual, batch_sizes, strict=True):
        got = np.asarray(got)
        if got.shape != want.shape:
            raise ExportCheckError(f"{format} export: at batch {batch} the reloaded file returns "
                                   f"shape {list(got.shape)}, PyTorch {list(want.shape)}; not "
                                   "written")
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        worst = max(worst, float(diff.max(initial=0.0)))
        if not np.allclose(got, want, atol=tolerance.atol, rtol=tolerance.rtol):
            raise ExportCheckError(
                f"{format} export: the reloaded file's outputs differ from PyTorch's at batch "
                f"{batch} by up to {float(diff.max()):.3g} ({tolerance}); not written. "
                "Try another --format (pt is always exact)")
    return worst


# ------------------------------------------------------------------------------ formats
Runner = Callable[[Any], Any]


def _write_pt(module: nn.Module, example: Any, path: Path) -> None:
    import torch

    torch.save(module, path)


def _load_pt(path: Path) -> tuple[str, Runner, None]:
    import torch

    # A pickled nn.Module needs full unpickling; this is the file we have just written.
    loaded = torch.load(path, map_location="cpu", weights_only=False).eval()

    def run(x: Any) -> Any:
        with torch.no_grad():
            return loaded(torch.from_numpy(x)).numpy()

    return f"torch {torch.__version__} (torch.load)", run, None


def _write_torchscript(module: nn.Module, example: Any, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        # torch.jit.trace warns that TorchScript is deprecated; the format is still asked for.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            traced = torch.jit.trace(module, example, check_trace=False)
        traced.save(str(path))


def _load_torchscript(path: Path) -> tuple[str, Runner, None]:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loaded = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # noqa: BLE001 - any reload failure is a failed check
            raise ExportCheckError(f"torchscript export: torch.jit.load cannot read the file "
                                   f"({type(exc).__name__}: {exc}); not written") from None

    def run(x: Any) -> Any:
        with torch.no_grad():
            return loaded(torch.from_numpy(x)).numpy()

    return f"torch {torch.__version__} (torch.jit.load)", run, None


def _write_onnx(module: nn.Module, example: Any, path: Path) -> None:
    import importlib.util

    import torch

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"--format onnx needs the {' and '.join(missing)} package(s): "
                         "pip install onnx onnxscript onnxruntime")
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress and deprecation chatter
        torch.onnx.export(
            module, (example,), str(path), dynamo=True, opset_version=ONNX_OPSET,
            input_names=[ONNX_INPUT_NAME], output_names=[ONNX_OUTPUT_NAME],
            # Only the batch axis is dynamic: channels and image size are the network's own.
            dynamic_shapes=({0: batch},), external_data=False, verbose=False,
        )


def _load_onnx(path: Path) -> tuple[str, Runner, int]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise UsageError(f"--format onnx needs the 'onnx' and 'onnxruntime' packages ({exc}); "
                         "pip install onnx onnxscript onnxruntime") from None
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        options = onnxruntime.SessionOptions()
        # One thread: the check must not compete with other work for a figure nobody reads.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), sess_options=options,
                                               providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any reload failure is a failed check
        raise ExportCheckError(f"onnx export: the file does not load in ONNX Runtime "
                               f"({type(exc).__name__}: {exc}); not written") from None
    input_name = session.get_inputs()[0].name

    def run(x: Any) -> Any:
        return session.run(None, {input_name: x})[0]

    runtime = f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"
    return runtime, run, int(opset)


_FORMATS: dict[str, tuple[Callable[[Any, Any, Path], None], Callable[[Path], tuple]]] = {
    "pt": (_write_pt, _load_pt),
    "torchscript": (_write_torchscript, _load_torchscript),
    "onnx": (_write_onnx, _load_onnx),
}
