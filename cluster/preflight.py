"""Input checks run before a run directory is created or Ray is started.

Each method names its check in the method registry (``MethodEntry.checker``); every check
raises a :class:`~prunesearch.methods.errors.PrunesearchError` with one line a user can act on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunesearch.methods.errors import UsageError

__all__ = ["check_device", "check_image_task"]


def check_device(config: Any, *, address: str | None) -> None:
    """``hardware.device`` names a device this machine has (private local instance); with a
    cluster address, only its spelling is checked here (the runner checks the cluster)."""
    device = str(config.hardware.device)
    try:
        import torch

        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"hardware.device {device!r} is not a device name (e.g. cpu, cuda, "
                         "cuda:1)") from None
    if not address:
        _check_runtime(config, parsed)
    if address or parsed.type == "cpu":
        return
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"hardware.device {device!r}: this machine has no CUDA GPU "
                             "(use cpu, or --address a cluster with GPUs)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UsageError(f"hardware.device {device!r}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError(f"hardware.device {device!r}: MPS is not available here")
    else:
        raise UsageError(f"hardware.device {device!r}: device type '{parsed.type}' is not "
                         "supported (cpu or cuda)")


def _check_runtime(config: Any, device: Any) -> None:
    """``hardware.runtime`` can run here (e.g. ``onnxruntime`` installed, float32)."""
    from prunesearch.methods.cost.runtimes import runtime_entry

    runtime = str(config.hardware.runtime)
    if runtime == "onnxruntime" and str(config.hardware.dtype) != "float32":
        raise UsageError(f"hardware.runtime onnxruntime times float32 networks, got "
                         f"hardware.dtype {config.hardware.dtype!r}")
    if device.type not in ("cpu", "cuda"):
        return  # the device check below says what is wrong
    try:
        runtime_entry(runtime).check(device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_image_task(config: Any) -> None:
    """Known dataset and model names and an existing checkpoint file, for methods that prune
    an image classifier from the model and dataset registries."""
    if config.evaluator.kind == "synthetic":
        return
    from prunesearch.methods.data import dataset_info
    from prunesearch.methods.models import model_info
    from prunesearch.methods.objects import resolve

    if config.data.factory is None:
        dataset_info(config.data)  # an image folder is scanned: a missing one fails here
    else:
        resolve(config.data.factory, key="data.factory")
    if config.model.factory is None:
        model_info(config.model.name)
    else:
        resolve(config.model.factory, key="model.factory")
    for key in ("finetune_fn", "score_fn"):
        if getattr(config.evaluator, key):
            resolve(getattr(config.evaluator, key), key=f"evaluator.{key}")
    if config.model.checkpoint and not Path(config.model.checkpoint).is_file():
        raise UsageError(f"model.checkpoint '{config.model.checkpoint}' does not exist")
    # Split sizes vs the dataset and granularity vs the model's widths: found here, before a
    # directory exists, rather than while the task is built (after the first progress line).
    from prunesearch.methods.input_checks import check_inputs

    check_inputs(config)
