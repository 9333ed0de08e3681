"""Our own group map and module surgery for the CIFAR ResNets and the digits CNN.

Dependency tracers cannot follow the option-A shortcut (a parameter-free zero padding), so these
networks are pruned here: a pruned network is a new, smaller instance of the same class, its
weights sliced from the base network by the kept channel indices of every group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from prunesearch.methods.models.cifar_resnet import CifarResNet
from prunesearch.methods.models.digits_cnn import DigitsCNN
from prunesearch.methods.pruning.importance import Producer
from prunesearch.methods.pruning.space import check_kept

__all__ = ["cifar_shortcut_index", "own_producers", "prune_own"]


def own_producers(model: nn.Module) -> dict[str, list[Producer]]:
    """Group name -> the convs and BNs writing that group's channels."""
    if isinstance(model, CifarResNet):
        groups: dict[str, list[Producer]] = {}
        for s, stage in enumerate(model.stages()):
            for i, block in enumerate(stage):
                groups[f"layer{s + 1}.{i}"] = [(block.conv1, None), (block.bn1, None)]
        for s, stage in enumerate(model.stages()):
            members: list[Producer] = [(model.conv1, None), (model.bn1, None)] if s == 0 else []
            for block in stage:
                members += [(block.conv2, None), (block.bn2, None)]
            groups[f"stage{s + 1}"] = members
        return groups
    if isinstance(model, DigitsCNN):
        return {f"conv{i}": [(getattr(model, f"conv{i}"), None), (getattr(model, f"bn{i}"), None)]
                for i in (1, 2, 3)}
    raise TypeError(f"{type(model).__name__} is not pruned by our own surgery")


def _idx(indices: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    return torch.as_tensor(list(indices), dtype=torch.int64, device=device)


@torch.no_grad()
def _copy_conv(dst: nn.Conv2d, src: nn.Conv2d, out_keep: Sequence[int] | None,
               in_keep: Sequence[int] | None) -> None:
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
def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, keep: Sequence[int]) -> None:
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
def _copy_linear(dst: nn.Linear, src: nn.Linear, in_keep: Sequence[int]) -> None:
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


def prune_own(model: nn.Module, kept: Mapping[str, Sequence[int]]) -> nn.Module:
    """A new, smaller network keeping channels ``kept[group]`` (sorted base indices) of every
    group of ``model``; its outputs equal the base network's restricted to those channels."""
    _check_kept(model, kept)
    if isinstance(model, DigitsCNN):
        return _prune_digits(model, kept)
    return _prune_cifar(model, kept)


def _like(new: nn.Module, model: nn.Module) -> nn.Module:
    """Put a freshly built network on the base network's device and dtype."""
    first = next(model.parameters())
    return new.to(device=first.device, dtype=first.dtype)


def _check_kept(model: nn.Module, kept: Mapping[str, Sequence[int]]) -> None:
    producers = own_producers(model)
    check_kept(kept, {name: members[0][0].out_channels for name, members in producers.items()})


def _prune_digits(model: DigitsCNN, kept: Mapping[str, Sequence[int]]) -> DigitsCNN:
    k = [list(kept[f"conv{i}"]) for i in (1, 2, 3)]
    new = _like(DigitsCNN(widths=[len(x) for x in k], num_classes=model.num_classes,
                          in_channels=model.in_channels), model)
    previous: list[int] | None = None
    for i in (1, 2, 3):
        _copy_conv(getattr(new, f"conv{i}"), getattr(model, f"conv{i}"), k[i - 1], previous)
        _copy_bn(getattr(new, f"bn{i}"), getattr(model, f"bn{i}"), k[i - 1])
        previous = k[i - 1]
    _copy_linear(new.fc, model.fc, k[2])
    return new.train(model.training)


def _prune_cifar(model: CifarResNet, kept: Mapping[str, Sequence[int]]) -> CifarResNet:
    n = model.blocks_per_stage
    stage_keep = [list(kept[f"stage{s + 1}"]) for s in range(3)]
    block_keep = [list(kept[f"layer{s + 1}.{i}"]) for s in range(3) for i in range(n)]
    base_stages = model.stages()
    shortcut_indices = [
        cifar_shortcut_index(base_stages[s][0].shortcut.index_list(), stage_keep[s - 1],
                             stage_keep[s])
        for s in (1, 2)
    ]
    new = _like(CifarResNet(model.depth, num_classes=model.num_classes,
                            stage_widths=[len(k) for k in stage_keep],
                            block_widths=[len(k) for k in block_keep],
                            shortcut_indices=shortcut_indices, in_channels=model.in_channels,
                            input_size=getattr(model, "input_size", 32)),
                model)
    _copy_conv(new.conv1, model.conv1, stage_keep[0], None)
    _copy_bn(new.bn1, model.bn1, stage_keep[0])
    in_keep = stage_keep[0]
    for s, (new_stage, old_stage) in enumerate(zip(new.stages(), base_stages)):
        for i, (nb, ob) in enumerate(zip(new_stage, old_stage)):
            mid = block_keep[s * n + i]
            _copy_conv(nb.conv1, ob.conv1, mid, in_keep)
            _copy_bn(nb.bn1, ob.bn1, mid)
            _copy_conv(nb.conv2, ob.conv2, stage_keep[s], mid)
            _copy_bn(nb.bn2, ob.bn2, stage_keep[s])
            in_keep = stage_keep[s]
    _copy_linear(new.linear, model.linear, stage_keep[2])
    return new.train(model.training)
