"""Analytic cost counts: multiply-accumulates, parameters and memory.

Two independent ways to count the same network, so each checks the other:

- from :class:`~prunesearch.methods.cost.specs.LayerSpec` lists (what the search uses: no module
  is built, a genome's shapes are enough), and
- from a real ``nn.Module`` with forward hooks (what the pruned network actually is).

Conventions (the usual ones for CIFAR ResNets, so the dense figures match published tables):
``macs`` counts multiply-accumulates (MACs) of convolutions (transposed ones included) and fully
connected layers only,
per image; BN, ReLU, adds and pooling are not counted (they are memory-bound and a few percent
of the MACs). ``params`` counts trainable parameters (conv and linear weights and biases, BN
scale and shift); BN running statistics are buffers and are not counted.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from prunesearch.methods.cost.specs import LayerSpec

__all__ = [
    "DTYPE_BYTES",
    "MB",
    "Counts",
    "activation_term",
    "activation_terms",
    "count_module",
    "count_specs",
    "dtype_bytes",
    "memory_mb",
    "peak_activation_bytes",
    "skip_sources",
    "spec_macs",
    "spec_params",
]

#: Bytes per element of the deployment dtypes (names as in the ``hardware.dtype`` setting).
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}

#: One MB in the memory objective (2**20 bytes).
MB = float(2**20)

_OPS = ("conv", "bn", "relu", "add", "shortcut", "maxpool", "avgpool", "gap", "flatten", "linear",
        "deconv", "embed")


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a ``hardware.dtype`` name.

    Raises:
        ValueError: unknown dtype name.
    """
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(
            f"dtype={dtype!r} is not supported; choose one of: {', '.join(DTYPE_BYTES)}"
        ) from None


@dataclasses.dataclass(frozen=True)
class Counts:
    """Per-image multiply-accumulates and trainable parameters of a network."""

    macs: int
    params: int


def _check_op(spec: LayerSpec) -> None:
    if spec.op not in _OPS:
        raise ValueError(f"LayerSpec.op={spec.op!r} is unknown; expected one of: {', '.join(_OPS)}")


def spec_macs(spec: LayerSpec) -> int:
    """Multiply-accumulates of one operation for its whole batch (conv and linear only)."""
    _check_op(spec)
    if spec.op == "conv":
        per_out = (spec.in_channels // spec.groups) * spec.taps
        return spec.batch * spec.out_channels * spec.out_hw[0] * spec.out_hw[1] * per_out
    if spec.op == "deconv":
        # Every input element is scattered onto (out / groups) x taps outputs.
        per_in = (spec.out_channels // spec.groups) * spec.taps
        return spec.batch * spec.in_channels * spec.in_hw[0] * spec.in_hw[1] * per_in
    if spec.op == "linear":
        return spec.batch * spec.in_channels * spec.out_channels
    return 0


def spec_params(spec: LayerSpec) -> int:
    """Trainable parameters of one operation."""
    _check_op(spec)
    if spec.op in ("conv", "deconv"):
        weight = spec.out_channels * (spec.in_channels // spec.groups) * spec.taps
        return weight + (spec.out_channels if spec.bias else 0)
    if spec.op == "linear":
        return spec.in_channels * spec.out_channels + (spec.out_channels if spec.bias else 0)
    if spec.op == "bn":
        return 2 * spec.out_channels
    if spec.op == "embed":
        return int(spec.kernel) * spec.out_channels
    return 0


def count_specs(specs: Sequence[LayerSpec]) -> Counts:
    """Per-image MACs and parameters of a network described by its layer specs."""
    if not specs:
        raise ValueError("specs is empty: a network has at least one layer")
    batch = specs[0].batch
    macs = sum(spec_macs(s) for s in specs)
    return Counts(macs=macs // batch, params=sum(spec_params(s) for s in specs))


def count_module(module: Any, input_shape: Sequence[int]) -> Counts:
    """Per-image MACs and parameters of a real module, measured with forward hooks.

    Runs one forward pass at batch 1 on CPU in float32 (``module`` is not modified; it is
    put in eval mode for the pass and restored afterwards).

    Args:
        module: A ``torch.nn.Module``.
        input_shape: Shape of one input sample, e.g. ``(3, 32, 32)``.
    """
    import torch
    from torch import nn

    from prunesearch.methods.pruning.layers import example_inputs

    macs = 0

    def conv_hook(mod: nn.Conv1d | nn.Conv2d, inputs: Any, output: torch.Tensor) -> None:
        nonlocal macs
        macs += output.numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)

    def deconv_hook(mod: nn.ConvTranspose1d | nn.ConvTranspose2d, inputs: Any,
                    output: torch.Tensor) -> None:
        nonlocal macs
        # Every input element is scattered onto (out / groups) x kernel outputs.
        macs += inputs[0].numel() * (mod.out_channels // mod.groups) * math.prod(mod.kernel_size)

    def linear_hook(mod: nn.Linear, inputs: Any, output: torch.Tensor) -> None:
        nonlocal macs
        macs += output.numel() * mod.in_features

    handles = []
    for sub in module.modules():
        if isinstance(sub, (nn.Conv1d, nn.Conv2d)):
            handles.append(sub.register_forward_hook(conv_hook))
        elif isinstance(sub, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
            handles.append(sub.register_forward_hook(deconv_hook))
        elif isinstance(sub, nn.Linear):
            handles.append(sub.register_forward_hook(linear_hook))
    was_training = module.training
    try:
        module.eval()
        param = next(module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        with torch.inference_mode():
            module(example_inputs(module, (1, *input_shape), dtype=dtype, device=device))
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return Counts(macs=int(macs), params=int(params))


def skip_sources(specs: Sequence[LayerSpec]) -> list[int | None]:
    """For every operation, the index of the ``add`` whose skip tensor is alive while it runs.

    An operation is inside a residual block when an ``add`` follows it before the network's
    head (``gap``/``flatten``/``linear``); that ``add``'s output size stands for the held skip
    tensor. Depends on the op sequence only, not on widths.
    """
    sources: list[int | None] = [None] * len(specs)
    next_add: int | None = None
    for i in range(len(specs) - 1, -1, -1):
        op = specs[i].op
        if op in ("gap", "flatten", "linear"):
            next_add = None
        sources[i] = next_add if op != "add" else None
        if op == "add":
            next_add = i
    return sources


def activation_term(specs: Sequence[LayerSpec], i: int, skip: int | None) -> int:
    """Live activation elements while operation ``i`` runs (see :func:`activation_terms`)."""
    s = specs[i]
    live = s.batch * s.in_channels * s.in_hw[0] * s.in_hw[1] * (2 if s.op == "add" else 1)
    live += s.batch * s.out_channels * s.out_hw[0] * s.out_hw[1]
    if skip is not None:
        a = specs[skip]
        live += a.batch * a.out_channels * a.out_hw[0] * a.out_hw[1]
    return live


def activation_terms(specs: Sequence[LayerSpec]) -> list[int]:
    """Live activation elements while each operation runs (a sequential executor's view).

    For operation ``i``: its input (two inputs for ``add``) plus its output plus, inside a
    residual block, the skip tensor the block holds until its ``add`` (taken to be the size of
    that ``add``'s output; see :func:`skip_sources`). This slightly over-counts the stem (which
    holds no skip tensor) but is exact for block interiors, where the peak of a ResNet lies,
    and it grows monotonically with every width.
    """
    sources = skip_sources(specs)
    return [activation_term(specs, i, sources[i]) for i in range(len(specs))]


def peak_activation_bytes(specs: Sequence[LayerSpec], dtype: str = "float32") -> int:
    """Peak live activation bytes over the network's operations (see :func:`activation_terms`)."""
    return max(activation_terms(specs)) * dtype_bytes(dtype)


def memory_mb(specs: Sequence[LayerSpec], dtype: str = "float32") -> float:
    """Memory objective: parameter bytes plus peak activation bytes, in MB (2**20 bytes).

    The batch size is the one the specs were built for (the deployment batch size).
    """
    param_bytes = sum(spec_params(s) for s in specs) * dtype_bytes(dtype)
    return (param_bytes + peak_activation_bytes(specs, dtype)) / MB
