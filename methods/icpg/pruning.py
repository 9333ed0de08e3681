"""Weight masks, per-graph edge pruning and sparsity counts for ICPG.

Weight masks are boolean tensors keyed by parameter name (see
:func:`~prunesearch.methods.icpg.models.prunable_weights`). A masked model keeps its pruned
entries at exactly zero: :func:`apply_weight_masks` runs after loading weights and after every
optimiser step, which gives the forward pass of PyTorch's ``CustomFromMask`` pruning without
its re-parametrisation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from prunesearch.methods.icpg.models import prunable_weights

__all__ = [
    "apply_weight_masks",
    "count_to_prune",
    "dense_masks",
    "magnitude_prune",
    "nominal_sparsity",
    "prune_edges",
    "random_prune",
    "score_prune",
    "weight_sparsity",
]

# floor(rate * n) must not lose an edge to binary rounding (0.29 * 100 = 28.999...).
_FLOOR_SLACK = 1e-9


def count_to_prune(rate: float, count: torch.Tensor) -> torch.Tensor:
    """``floor(rate * count)`` elementwise, robust to binary rounding of ``rate``."""
    return torch.floor(rate * count.to(torch.float64) + _FLOOR_SLACK).to(torch.long)


def dense_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """All-true masks for every prunable weight of ``model``."""
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in prunable_weights(model).items()}


@torch.no_grad()
def apply_weight_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned entries of ``model``'s prunable weights in place."""
    params = prunable_weights(model)
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))


def _prune_lowest(scores: dict[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
                  rate: float) -> dict[str, torch.Tensor]:
    """Remove ``round(rate * alive)`` live entries with the lowest score, over all tensors."""
    names = list(masks)
    flat_mask = torch.cat([masks[n].reshape(-1) for n in names])
    flat_score = torch.cat([scores[n].reshape(-1).to(torch.float64) for n in names])
    alive = torch.nonzero(flat_mask).view(-1)
    # PyTorch's global pruning with a float amount removes round(amount * unpruned).
    k = round(rate * alive.numel())
    new_flat = flat_mask.clone()
    if k > 0:
        order = torch.argsort(flat_score[alive], stable=True)
        new_flat[alive[order[:k]]] = False
    out, start = {}, 0
    for n in names:
        size = masks[n].numel()
        out[n] = new_flat[start:start + size].view_as(masks[n])
        start += size
    return out


def score_prune(masks: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor],
                rate: float, *, scope: str = "global") -> dict[str, torch.Tensor]:
    """The new masks without the ``rate`` fraction of live weights with the lowest ``scores``.

    Args:
        masks: Current masks by parameter name.
        scores: One score per weight, same shapes.
        rate: Fraction of the live weights removed.
        scope: ``global``: one ranking over all layers (PyTorch's ``global_unstructured``, the
            official code); ``layer``: every layer loses ``rate`` of its own live weights.
    """
    if scope == "global":
        return _prune_lowest(dict(scores), masks, rate)
    if scope == "layer":
        out: dict[str, torch.Tensor] = {}
        for name in masks:
            out.update(_prune_lowest({name: scores[name]}, {name: masks[name]}, rate))
        return out
    raise ValueError(f"unknown pruning scope {scope!r}; valid: global, layer")


def magnitude_prune(model: nn.Module, masks: Mapping[str, torch.Tensor], rate: float, *,
                    scope: str = "global") -> dict[str, torch.Tensor]:
    """Unstructured L1 pruning: the new masks without the ``rate`` fraction of the live weights
    with the smallest magnitude (``model``'s current weights), across all layers by default."""
    params = prunable_weights(model)
    return score_prune(masks, {n: params[n].detach().abs() for n in masks}, rate, scope=scope)


def random_prune(masks: Mapping[str, torch.Tensor], rate: float, *,
                 generator: torch.Generator, scope: str = "global") -> dict[str, torch.Tensor]:
    """The new masks without a uniformly random ``rate`` fraction of the live weights."""
    scores = {n: torch.rand(m.shape, generator=generator) for n, m in masks.items()}
    return score_prune(masks, scores, rate, scope=scope)


def weight_sparsity(model: nn.Module) -> float:
    """Zero weights over all prunable weights of ``model`` (realised, counted)."""
    params = prunable_weights(model).values()
    total = sum(p.numel() for p in params)
    zeros = sum(int((p == 0).sum()) for p in params)
    return zeros / total if total else 0.0


def prune_edges(edge_alive: torch.Tensor, edge_graph: torch.Tensor, scores: torch.Tensor,
                rate: float, num_graphs: int) -> torch.Tensor:
    """Drop, in every graph, ``floor(rate * live edges)`` of its live edges with the lowest score.

    Args:
        edge_alive: ``(E,)`` bool, the edges every graph still has.
        edge_graph: ``(E,)`` graph id of every edge.
        scores: ``(E,)`` edge scores (only live entries are read); ties go to the lower index.
        rate: Fraction of each graph's current edges to drop.
        num_graphs: Graphs in the dataset.

    Returns:
        The new ``edge_alive`` (a new tensor).
    """
    live = torch.nonzero(edge_alive).view(-1)
    graph_of = edge_graph[live]
    counts = torch.bincount(graph_of, minlength=num_graphs)
    drop_count = count_to_prune(rate, counts)
    # Order live edges by (graph, score): stable sort by score, then stable sort by graph.
    order = torch.argsort(scores[live].to(torch.float64), stable=True)
    order = order[torch.argsort(graph_of[order], stable=True)]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(live.numel()) - starts[graph_of[order]]
    dropped = live[order[rank < drop_count[graph_of[order]]]]
    new_alive = edge_alive.clone()
    new_alive[dropped] = False
    return new_alive


def nominal_sparsity(rate: float, rounds: int) -> float:
    """The schedule's sparsity after ``rounds`` rounds of pruning ``rate`` of what remains."""
    return 1.0 - math.pow(1.0 - rate, rounds)
