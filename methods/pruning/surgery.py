"""Module surgery shared by the model families that prune with their own code (the CIFAR
ResNets, the digits CNN): copy the kept channels of a base layer into a smaller new layer.

Each family's ``prune`` (:mod:`prunesearch.methods.families`) builds the smaller network and
calls these helpers layer by layer; :func:`own_producers` and :func:`prune_own` dispatch to the
family that owns a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from prunesearch.methods.pruning.importance import Producer

__all__ = ["cifar_shortcut_index", "copy_bn", "copy_conv", "copy_linear", "like",
           "own_producers", "prune_own"]


def own_producers(model: nn.Module, input_shape: Sequence[int] | None = None
                  ) -> dict[str, list[Producer]]:
    """Group name -> the convs and BNs writing that group's channels (any registered family)."""
    from prunesearch.methods.families import family_of

    family = family_of(model)
    return family.producers(model, family.input_shape(model, input_shape))


def prune_own(model: nn.Module, kept: Mapping[str, Sequence[int]],
              input_shape: Sequence[int] | None = None) -> nn.Module:
    """A new, smaller network keeping channels ``kept[group]`` (sorted base indices) of every
    group of ``model``; its outputs equal the base network's restricted to those channels."""
    from prunesearch.methods.families import family_of

    family = family_of(model)
    return family.prune(model, kept, family.input_shape(model, input_shape))


def _idx(indices: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    return torch.as_tensor(list(indices), dtype=torch.int64, device=device)


@torch.no_grad()
def copy_conv(dst: nn.Conv2d, src: nn.Conv2d, out_keep: Sequence[int] | None,
              in_keep: Sequence[int] | None) -> None:
    """Copy ``src``'s weights at the kept output/input channels (``None``: all) into ``dst``."""
    w = src.weight.detach()
    if out_keep is not None:
        w = w.index_select(0, _idx(out_keep, w.device))
    if in_keep is not None:
        w = w.index_select(1, _idx(in_keep, w.device))
    dst.weight.copy_(w)
    if src.bias is not None:
        b = src.bias.detach()
        dst.bias.copy_(b if out_keep is None else b.index_select(0, _idx(out_keep, b.device)))


@torch.no_grad()
def copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, keep: Sequence[int]) -> None:
    """Copy a BatchNorm's affine parameters and running statistics at channels ``keep``."""
    idx = _idx(keep, src.running_mean.device if src.running_mean is not None
               else src.weight.device)
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = getattr(src, name)
        if value is not None:
            getattr(dst, name).copy_(value.detach().index_select(0, idx))
    if src.num_batches_tracked is not None and dst.num_batches_tracked is not None:
        dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.eps, dst.momentum = src.eps, src.momentum


@torch.no_grad()
def copy_linear(dst: nn.Linear, src: nn.Linear, in_keep: Sequence[int]) -> None:
    """Copy a classifier's weights at the kept input features (all outputs)."""
    dst.weight.copy_(src.weight.detach().index_select(1, _idx(in_keep, src.weight.device)))
    if src.bias is not None:
        dst.bias.copy_(src.bias.detach())


def cifar_shortcut_index(base_index: Sequence[int], in_keep: Sequence[int],
                         out_keep: Sequence[int]) -> list[int]:
    """Map an option-A shortcut through pruning.

    New output channel ``j`` is old output channel ``out_keep[j]``, which copied old input
    channel ``base_index[out_keep[j]]`` (or was zero padding). If that input channel was kept,
    its new position is copied; otherwise the output is zero.
    """
    position = {old: new for new, old in enumerate(in_keep)}
    return [position.get(base_index[old], -1) if base_index[old] >= 0 else -1
            for old in out_keep]


def like(new: nn.Module, model: nn.Module) -> nn.Module:
    """Put a freshly built network on the base network's device and dtype."""
    first = next(model.parameters())
    return new.to(device=first.device, dtype=first.dtype)
