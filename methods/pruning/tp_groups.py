"""Torch-Pruning dependency groups of any CNN (torchvision's classifiers, a user's network).

Every group Torch-Pruning's ``DependencyGraph`` finds is one gene, so residual adds,
concatenations (DenseNet), depthwise convs and squeeze-excitation stay consistent. On top of the
graph this module adds what real networks need:

* **The classifier** is found wherever it is: the last Conv/Linear run by the forward pass whose
  outputs are the network's outputs (``fc``, ``classifier[-1]``, SqueezeNet's final conv), or the
  module named in the graph options (``model.classifier``). Its outputs are never pruned.
* **Ignored layers** (``model.ignore``, module names; a container stands for every Conv/Linear
  inside it) keep their output width: their groups leave the genome.
* **Grouped convolutions** (ResNeXt, RegNet): a group that feeds or is written by a conv with
  ``G`` groups keeps a multiple of ``G`` channels, the same positions in every one of the ``G``
  blocks (:attr:`TPGroup.multiple`); Torch-Pruning's grouped-conv handler assumes exactly that.
* **Channel shuffle** (ShuffleNet) reshapes channels to 5-D, which Torch-Pruning cannot map
  (a ``ZeroDivisionError`` inside its index mapping). Those reshapes are marked unmappable while
  the graph is built, and every group whose channels pass through one is kept at full width (the
  branches' inner widths stay prunable).

A group is named after its first output-pruned Conv/Linear in execution order and groups are
ordered by that layer's position. Options travel with the model (:func:`set_graph_options`), so a
deep copy, a pickled copy on an actor and a rebuilt base all see the same groups.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunesearch.methods.errors import ModelTraceError
from prunesearch.methods.pruning.importance import Producer
from prunesearch.methods.pruning.layers import (
    BATCH_NORMS,
    CONVOLUTIONS,
    PRUNABLE_LAYERS,
    example_inputs,
)
from prunesearch.methods.pruning.space import check_kept

__all__ = [
    "GraphOptions",
    "TPGroup",
    "find_classifier",
    "graph_options",
    "periodic_keep",
    "set_graph_options",
    "tp_groups",
    "tp_producers",
    "tp_prune",
]

_OPTIONS_ATTR = "_prunesearch_graph_options"
_PRODUCER_TYPES = (*PRUNABLE_LAYERS, *BATCH_NORMS, nn.LayerNorm, nn.GroupNorm)


@dataclasses.dataclass(frozen=True)
class GraphOptions:
    """How a network's dependency graph is cut into genes.

    Attributes:
        classifier: Module name of the classifier (its outputs are the classes); empty: found
            from the forward pass.
        ignore: Module names whose output channels are kept (a container: every Conv/Linear in
            it).
    """

    classifier: str = ""
    ignore: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TPGroup:
    """One prunable group: its name, full width, the channel multiple it keeps and producers."""

    name: str
    width: int
    multiple: int
    producers: list[Producer]
    order: int


def set_graph_options(model: nn.Module, *, classifier: str | None = None,
                      ignore: Sequence[str] = ()) -> nn.Module:
    """Attach :class:`GraphOptions` to ``model`` (kept by deep copies and pickles); returns it."""
    options = GraphOptions(classifier=classifier or "", ignore=tuple(ignore))
    names = dict(model.named_modules())
    for name in ([options.classifier] if options.classifier else []) + list(options.ignore):
        if name not in names:
            close = [n for n in names if n and (name in n or n in name)][:5]
            hint = f" (close: {', '.join(close)})" if close else ""
            raise ModelTraceError(f"{type(model).__name__} has no module named '{name}'{hint}; "
                                  "model.classifier and model.ignore take names from "
                                  "model.named_modules()")
    object.__setattr__(model, _OPTIONS_ATTR, options)  # a plain attribute, not a submodule
    return model


def graph_options(model: nn.Module) -> GraphOptions:
    """The options attached to ``model`` (defaults when none are)."""
    return getattr(model, _OPTIONS_ATTR, None) or GraphOptions()


def _example(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    return example_inputs(model, (1, *input_shape), dtype=dtype, device=device)


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for item in out:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def find_classifier(model: nn.Module, input_shape: Sequence[int]) -> nn.Module:
    """The layer writing the network's outputs (see the module docstring).

    Raises:
        ModelTraceError: the network does not run on ``(1, *input_shape)`` or no Conv/Linear
            writes its outputs (then ``model.classifier`` must name it).
    """
    options = graph_options(model)
    if options.classifier:
        return dict(model.named_modules())[options.classifier]
    executed: list[tuple[nn.Module, tuple[int, ...]]] = []

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            executed.append((module, tuple(output.shape)))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, PRUNABLE_LAYERS)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = _first_tensor(model(_example(model, input_shape)))
    except Exception as exc:
        raise ModelTraceError(f"{type(model).__name__} does not run on input "
                              f"{(1, *input_shape)}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if out is None or out.ndim < 2:
        raise ModelTraceError(f"{type(model).__name__} returns no (N, classes) tensor; name its "
                              "classifier in model.classifier")
    classes = int(out.shape[1])
    for module, shape in reversed(executed):
        if len(shape) >= 2 and shape[1] == classes and (
                (isinstance(module, nn.Linear) and module.out_features == classes)
                or (isinstance(module, CONVOLUTIONS) and module.out_channels == classes)):
            return module
    raise ModelTraceError(f"cannot find the classifier of {type(model).__name__}: no Conv or "
                          f"Linear writes its {classes} outputs; name it in model.classifier")


def num_outputs(module: nn.Module) -> int:
    """Output features (Linear) or channels (Conv) of a classifier layer."""
    return int(module.out_features if isinstance(module, nn.Linear) else module.out_channels)


@contextlib.contextmanager
def _shuffle_tolerant(unmapped: list[Any]) -> Iterator[None]:
    """Let Torch-Pruning build graphs through channel shuffles: a reshape whose index mapping
    fails is recorded in ``unmapped`` (its groups are then kept out of the genome)."""
    from torch_pruning.dependency import index_mapping

    original = index_mapping.update_reshape_index_mapping

    def tolerant(graph: Any, node: Any) -> None:
        try:
            original(graph, node)
        except ZeroDivisionError:
            unmapped.append(node.module)

    index_mapping.update_reshape_index_mapping = tolerant
    shufflenet = _torchvision_shufflenet()
    shuffle = getattr(shufflenet, "channel_shuffle", None)
    if shuffle is not None:
        shufflenet.channel_shuffle = _opaque_shuffle
    try:
        yield
    finally:
        index_mapping.update_reshape_index_mapping = original
        if shuffle is not None:
            shufflenet.channel_shuffle = shuffle


def _torchvision_shufflenet() -> Any:
    import sys

    return sys.modules.get("torchvision.models.shufflenetv2")


class PrunesearchChannelShuffle(torch.autograd.Function):
    """Torchvision's channel shuffle as one opaque op while a graph is traced: Torch-Pruning
    sees one node (named after this class) instead of the 5-D reshape it cannot map, and every
    group whose channels pass through it is kept at full width."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, groups: int) -> torch.Tensor:
        ctx.groups = groups
        n, c, h, w = x.shape
        return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        n, c, h, w = grad.shape
        g = ctx.groups
        return grad.view(n, c // g, g, h, w).transpose(1, 2).reshape(n, c, h, w), None


def _opaque_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    return PrunesearchChannelShuffle.apply(x, groups)


def _is_opaque(node: Any) -> bool:
    grad_fn = getattr(node, "grad_fn", None)
    name = grad_fn.name() if grad_fn is not None and hasattr(grad_fn, "name") else ""
    return "PrunesearchChannelShuffle" in name


def _ignored_layers(model: nn.Module, classifier: nn.Module) -> list[nn.Module]:
    modules = dict(model.named_modules())
    ignored = [classifier]
    for name in graph_options(model).ignore:
        target = modules[name]
        ignored += [m for m in target.modules() if isinstance(m, PRUNABLE_LAYERS)]
    return ignored


@contextlib.contextmanager
def _tracing_grads(model: nn.Module) -> Iterator[None]:
    """Every parameter requires gradients inside; each gets its own flag back on exit."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _graph(model: nn.Module, input_shape: Sequence[int]) -> tuple[tp.DependencyGraph, list[TPGroup]]:
    classifier = find_classifier(model, input_shape)
    ignored = _ignored_layers(model, classifier)
    was_training = model.training
    model.eval()  # tracing runs one forward pass; eval keeps BN running stats untouched
    unmapped: list[Any] = []
    try:
        # Torch-Pruning traces through autograd: undo a caller's no_grad / inference_mode, and
        # let frozen parameters (a teacher, a criterion learned with the weights fixed) require
        # gradients while it traces, or the forward builds no graph and no group is found.
        with torch.inference_mode(False), torch.enable_grad(), _shuffle_tolerant(unmapped), \
                _tracing_grads(model):
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=_example(model, input_shape), verbose=False)
            raw, failed = _all_groups(graph, ignored)
    except ModelTraceError:
        raise
    except Exception as exc:
        raise ModelTraceError(f"Torch-Pruning cannot trace {type(model).__name__}: "
                              f"{type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}; keep the "
                              "offending layers out with model.ignore") from exc
    finally:
        model.train(was_training)
    return graph, _describe(model, graph, raw, set(map(id, unmapped + failed)))


def _all_groups(graph: tp.DependencyGraph, ignored: list[nn.Module]) -> tuple[list, list]:
    """Torch-Pruning's ``get_all_groups``, one root at a time: a root whose group cannot be
    built (its index mapping fails, as around a channel shuffle) is returned in the second list
    and its channels stay at full width, instead of ending the whole walk."""
    visited: set[int] = set()
    groups, failed = [], []
    skip = set(map(id, ignored + list(graph.IGNORED_LAYERS_IN_TRACING)))
    for module in list(graph.module2node):
        if id(module) in skip or id(module) in visited:
            continue
        if not isinstance(module, PRUNABLE_LAYERS):
            continue
        pruner = graph.get_pruner_of_module(module)
        if pruner is None or pruner.get_out_channels(module) is None:
            continue
        try:
            group = graph.get_pruning_group(module, pruner.prune_out_channels,
                                            list(range(pruner.get_out_channels(module))))
        except (IndexError, ZeroDivisionError, ValueError):
            failed.append(module)
            continue
        prunable = True
        for dep, _ in group:
            if graph.is_out_channel_pruning_fn(dep.handler):
                visited.add(id(dep.target.module))
                if id(dep.target.module) in skip:
                    prunable = False
        if prunable:
            groups.append(group)
    return groups, failed


def _describe(model: nn.Module, graph: tp.DependencyGraph, groups: list,
              unmapped: set[int]) -> list[TPGroup]:
    """The prunable groups, in network order."""
    order = {m: i for i, (_, m) in enumerate(model.named_modules())}
    names = {m: n for n, m in model.named_modules()}
    described = []
    for group in groups:
        producers: list[Producer] = []
        multiple = 1
        crosses_unmapped = False
        for dep, idxs in group:
            for node in (dep.source, dep.target):
                if id(node.module) in unmapped or _is_opaque(node):
                    crosses_unmapped = True
            module = dep.target.module
            if isinstance(module, CONVOLUTIONS) and module.groups > 1 and not (
                    module.groups == module.out_channels == module.in_channels):
                # Grouped (not depthwise) conv: equal positions in every one of its blocks.
                multiple = math.lcm(multiple, int(module.groups))
            if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(
                    module, _PRODUCER_TYPES) and module in order:
                producers.append((module, [int(i) for i in idxs]))
        if crosses_unmapped:
            continue  # a channel shuffle reorders these channels: kept at full width
        roots = [m for m, _ in producers if isinstance(m, PRUNABLE_LAYERS)]
        if not roots:
            continue  # nothing prunable writes these channels
        first = min(roots, key=order.__getitem__)
        width = int(graph.get_out_channels(first))
        if width % multiple or width < 2:
            continue  # cannot keep fewer channels and stay consistent
        described.append(TPGroup(names[first], width, multiple, producers, order[first]))
    described.sort(key=lambda g: g.order)
    return described


def tp_groups(model: nn.Module, *, input_shape: Sequence[int] = (3, 32, 32)
              ) -> list[tuple[str, int, int]]:
    """``(name, full_width, multiple)`` of every prunable group of ``model``, in network order.

    Raises:
        ModelTraceError: the network cannot be traced (the message names it and why).
    """
    _, groups = _graph(model, input_shape)
    return [(g.name, g.width, g.multiple) for g in groups]


def tp_producers(model: nn.Module, *, input_shape: Sequence[int] = (3, 32, 32)
                 ) -> dict[str, list[Producer]]:
    """Group name -> layers writing its channels (with Torch-Pruning's index maps)."""
    _, groups = _graph(model, input_shape)
    return {g.name: g.producers for g in groups}


def periodic_keep(kept: Sequence[int], width: int, multiple: int) -> bool:
    """Whether ``kept`` holds the same positions in each of the ``multiple`` blocks."""
    if multiple <= 1:
        return True
    block = width // multiple
    positions = [i for i in kept if i < block]
    expected = [b * block + p for b in range(multiple) for p in positions]
    return list(kept) == expected


def tp_prune(model: nn.Module, kept: Mapping[str, Sequence[int]], *,
             input_shape: Sequence[int] = (3, 32, 32)) -> nn.Module:
    """A pruned deep copy of ``model`` keeping channels ``kept[group]`` of every group.

    Raises:
        ValueError: A group is missing or unknown, would keep zero channels (Torch-Pruning
            would build a broken network, VainF/Torch-Pruning#8), or a grouped-conv group's
            kept channels are not the same positions in every block.
    """
    pruned = copy.deepcopy(model)
    graph, described = _graph(pruned, input_shape)
    check_kept(kept, {g.name: g.width for g in described})
    modules = dict(pruned.named_modules())
    with _shuffle_tolerant([]):
        _prune_groups(graph, modules, described, kept)
    return pruned


def _prune_groups(graph: tp.DependencyGraph, modules: Mapping[str, nn.Module],
                  described: Sequence[TPGroup], kept: Mapping[str, Sequence[int]]) -> None:
    for g in described:
        keep = list(kept[g.name])
        if not periodic_keep(keep, g.width, g.multiple):
            raise ValueError(f"group '{g.name}' feeds a grouped conv ({g.multiple} groups): keep "
                             f"the same positions in each of its {g.multiple} blocks")
        remove = sorted(set(range(g.width)) - set(keep))
        if not remove:
            continue
        module = modules[g.name]
        handler = graph.get_pruner_of_module(module).prune_out_channels
        group = graph.get_pruning_group(module, handler, idxs=remove)
        group.prune()
