"""Which groups CLAD prunes, how many filters each keeps, and the fixed baseline criteria.

Kept filters of a pruned group: ``round(C * (1 - rate))`` rounded to ``hardware.granularity``
(half up, at least one granule, at most the full width), expressed as the pruning core's
genome, so its encoding, surgery and cost model apply unchanged. Groups that are not pruned
keep their full width.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from prunesearch.methods.clad.learner import DESCRIPTORS, filter_descriptors
from prunesearch.methods.clad.settings import FIXED_CRITERIA
from prunesearch.methods.pruning.importance import Producer
from prunesearch.methods.pruning.layers import CONVS
from prunesearch.methods.pruning.space import GenomeSpace

__all__ = ["fixed_scores", "pruned_groups", "rate_for_macs_reduction", "target_genome"]


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)  # Python's round() rounds 7.5 to 8 but 6.5 to 6


def pruned_groups(space: GenomeSpace, layers: str, producers: Mapping[str, Sequence[Producer]]
                  | None = None) -> list[str]:
    """Names of the groups CLAD prunes.

    Args:
        space: The model's genome space.
        layers: ``blocks``: a residual block's first conv (CIFAR ResNets: kind ``block``;
            plain CNNs: every conv; torchvision: groups written by exactly one conv besides
            depthwise ones, i.e. the inner convs of residual blocks and MobileNet-style
            expansion widths); ``all``: every group, stage widths included.
        producers: Group producers (needed for torchvision groups with ``blocks``).
    """
    if layers not in ("blocks", "all"):
        raise ValueError(f"layers must be 'blocks' or 'all', got {layers!r}")
    if producers is not None and not any(isinstance(m, CONVS) for members in producers.values()
                                         for m, _ in members):
        raise ValueError(f"CLAD prunes convolution filters and {space.model_name} has no "
                         "prunable convolution (Conv1d/Conv2d); prune it with method: hamp or "
                         "halp")
    if layers == "all":
        return list(space.names)
    names = []
    for group in space.groups:
        if group.kind in ("block", "conv"):
            names.append(group.name)
        elif group.kind == "tp-group":
            if producers is None:
                raise ValueError("torchvision groups need producers= to tell inner convs apart")
            # A depthwise conv only carries the channels of the conv before it (MobileNet's
            # expansion width): it does not make the group a residual one.
            convs = [m for m, _ in producers[group.name] if isinstance(m, CONVS)
                     and not (m.groups > 1 and m.groups == m.in_channels)]
            if len(convs) == 1:
                names.append(group.name)
    if not names:
        raise ValueError(f"{space.model_name} has no prunable block convs; use clad.layers: all")
    return names


def target_genome(space: GenomeSpace, groups: Sequence[str], rate: float) -> tuple[int, ...]:
    """The genome keeping ``round(C * (1 - rate))`` filters (granule-rounded) in ``groups``
    and every channel elsewhere."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    chosen = set(groups)
    unknown = chosen - set(space.names)
    if unknown:
        raise ValueError(f"groups {sorted(unknown)} are not in the genome space")
    genome = []
    for group, upper in zip(space.groups, space.upper()):
        if group.name not in chosen:
            genome.append(upper)
            continue
        kept = _half_up(group.full_width * (1.0 - rate))
        genome.append(min(upper, max(1, _half_up(kept / space.granularity))))
    return space.validate(genome)


def rate_for_macs_reduction(space: GenomeSpace, groups: Sequence[str], target: float, *,
                            candidates: Sequence[float] | None = None) -> tuple[float, float]:
    """The rate (from ``candidates``, default 0.00..0.90 by 0.01) whose genome's MACs reduction
    is closest to ``target`` (e.g. 0.53); returns ``(rate, achieved reduction)``."""
    from prunesearch.methods.cost.counts import count_specs
    from prunesearch.methods.pruning.specs import layer_specs

    dense = count_specs(layer_specs(space, space.full_widths)).macs
    best: tuple[float, float, float] | None = None
    for rate in candidates if candidates is not None else [i / 100 for i in range(91)]:
        genome = target_genome(space, groups, rate)
        macs = count_specs(layer_specs(space, space.channels(genome))).macs
        reduction = 1.0 - macs / dense
        gap = abs(reduction - target)
        if best is None or gap < best[0] - 1e-12:
            best = (gap, rate, reduction)
    assert best is not None
    return best[1], best[2]


def fixed_scores(model: nn.Module, space: GenomeSpace, criterion: str,
                 producers: Mapping[str, Sequence[Producer]], *,
                 grads: Mapping[nn.Parameter, torch.Tensor] | None = None,
                 ) -> dict[str, torch.Tensor]:
    """One score per channel of every group under a fixed criterion (higher = keep).

    ``l1``/``l2``: the norm of each producing conv's filter (summed over producers); ``fpgm``:
    the sum of distances to the layer's other filters (FPGM removes those nearest the
    geometric median); ``taylor``: the pruning core's first-order Taylor score over the
    producing BNs (HALP's), from ``grads`` (parameter -> gradient of a training loss).
    """
    if criterion not in FIXED_CRITERIA:
        raise ValueError(f"criterion must be one of {FIXED_CRITERIA}, got {criterion!r}")
    if criterion == "taylor":
        from prunesearch.methods.pruning import rank_channels

        if grads is None:
            raise ValueError("criterion 'taylor' needs grads=")
        return rank_channels(model, space, importance="taylor", grads=grads)
    column = DESCRIPTORS.index(criterion)
    return {g.name: filter_descriptors(producers[g.name], g.full_width)[:, column]
            .to(torch.float64) for g in space.groups}
