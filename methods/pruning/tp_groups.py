"""Torch-Pruning dependency groups for torchvision models (ResNet-18/50, MobileNetV2).

Every group Torch-Pruning's ``DependencyGraph`` finds (the classifier's outputs excluded) is one
gene, so residual adds and depthwise convs stay consistent. A group is named after its first
output-pruned conv in module order (``conv1`` for ResNet-18's stem/stage-1 group), and groups are
ordered by that conv's position in the network.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from prunesearch.methods.pruning.importance import Producer
from prunesearch.methods.pruning.space import check_kept

__all__ = ["tp_groups", "tp_producers", "tp_prune"]


def _classifier(model: nn.Module) -> nn.Module:
    from prunesearch.methods.models import _classifier as find

    return find(model)


def _graph(model: nn.Module, input_shape: Sequence[int]) -> tuple[tp.DependencyGraph, list]:
    was_training = model.training
    model.eval()  # tracing runs one forward pass; eval keeps BN running stats untouched
    try:
        # Torch-Pruning traces through autograd: undo a caller's no_grad / inference_mode.
        with torch.inference_mode(False), torch.enable_grad():
            first = next(model.parameters())
            example = torch.zeros(1, *input_shape, device=first.device, dtype=first.dtype)
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    finally:
        model.train(was_training)
    groups = list(graph.get_all_groups(ignored_layers=[_classifier(model)],
                                       root_module_types=[nn.Conv2d, nn.Linear]))
    return graph, groups


def _describe(model: nn.Module, graph: tp.DependencyGraph, groups: list
              ) -> list[tuple[str, int, list[Producer]]]:
    """(name, width, producers) of every group, in network order."""
    order = {m: i for i, (_, m) in enumerate(model.named_modules())}
    names = {m: n for n, m in model.named_modules()}
    described = []
    for group in groups:
        producers: list[Producer] = []
        for dep, idxs in group:
            module = dep.target.module
            if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(
                    module, (nn.Conv2d, nn.BatchNorm2d)):
                producers.append((module, [int(i) for i in idxs]))
        convs = [m for m, _ in producers if isinstance(m, nn.Conv2d)]
        if not convs:
            continue  # nothing prunable writes these channels
        first = min(convs, key=order.__getitem__)
        width = graph.get_out_channels(first)
        described.append((names[first], int(width), producers, order[first]))
    described.sort(key=lambda item: item[3])
    return [(name, width, producers) for name, width, producers, _ in described]


def tp_groups(model: nn.Module, *, input_shape: Sequence[int] = (3, 32, 32)) -> list[tuple[str, int]]:
    """``(name, full_width)`` of every prunable group of ``model``, in network order."""
    graph, groups = _graph(model, input_shape)
    return [(name, width) for name, width, _ in _describe(model, graph, groups)]


def tp_producers(model: nn.Module, *, input_shape: Sequence[int] = (3, 32, 32)
                 ) -> dict[str, list[Producer]]:
    """Group name -> convs and BNs writing its channels (with Torch-Pruning's index maps)."""
    graph, groups = _graph(model, input_shape)
    return {name: producers for name, _, producers in _describe(model, graph, groups)}


def tp_prune(model: nn.Module, kept: Mapping[str, Sequence[int]], *,
             input_shape: Sequence[int] = (3, 32, 32)) -> nn.Module:
    """A pruned deep copy of ``model`` keeping channels ``kept[group]`` of every group.

    Raises:
        ValueError: A group is missing or unknown, or would keep zero channels (Torch-Pruning
            would build a broken network, VainF/Torch-Pruning#8).
    """
    pruned = copy.deepcopy(model)
    graph, groups = _graph(pruned, input_shape)
    described = _describe(pruned, graph, groups)
    check_kept(kept, {name: width for name, width, _ in described})
    modules = dict(pruned.named_modules())
    for name, width, _ in described:
        keep = list(kept[name])
        remove = sorted(set(range(width)) - set(keep))
        if not remove:
            continue
        module = modules[name]
        handler = graph.get_pruner_of_module(module).prune_out_channels
        group = graph.get_pruning_group(module, handler, idxs=remove)
        group.prune()
    return pruned
