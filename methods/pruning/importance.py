"""Channel importance criteria: one score per channel of a group (higher = keep).

A group's score sums the criterion over the group's *producers*, the convs and BNs whose output
channels are the group's channels (for a residual stage: the stem or shortcut conv and every
block's last conv/BN; for a depthwise pair: both convs):

* ``l1``: L1 norm of each producing conv's (or linear layer's) output filter (Li et al., 2017),
  summed.
* ``bn_scale``: ``|gamma|`` of each producing BN (Liu et al., 2017, network slimming), summed.
* ``taylor``: first-order Taylor estimate of the loss change when a channel is removed from
  every producing BN at once, ``|sum over BNs (gamma * dL/dgamma + beta * dL/dbeta)|``
  (Molchanov et al., 2019; summed inside the absolute value as NVlabs/HALP's
  ``prune/importance.py`` does for a group); needs gradients of a training batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.methods.pruning.layers import BATCH_NORMS, PRUNABLE_LAYERS, filter_weights

__all__ = ["IMPORTANCES", "Producer", "batch_gradients", "group_scores", "keep_top",
           "keep_top_periodic"]

IMPORTANCES = ("l1", "bn_scale", "taylor")

#: Normalisation layers whose per-channel scale ``bn_scale`` and ``taylor`` read (LayerNorm:
#: ConvNeXt; GroupNorm: networks without BN).
_NORMS = (*BATCH_NORMS, nn.LayerNorm, nn.GroupNorm)

#: A producer of a group's channels: (module, index map). ``index[i]`` is the module's output
#: channel that carries group channel ``i`` (identity for every network we prune).
Producer = tuple[nn.Module, Sequence[int] | None]


def batch_gradients(model: nn.Module, example_inputs: tuple[torch.Tensor, torch.Tensor] | Callable[[nn.Module], torch.Tensor]
                    ) -> dict[nn.Parameter, torch.Tensor]:
    """Gradients of the cross-entropy loss of one batch ``(images, labels)`` (or of
    ``loss_fn(model)`` when a callable is given), per parameter. The model's ``.grad`` fields
    and train/eval mode are left as they were; BN uses batch statistics, as in training."""
    saved = {p: p.grad for p in model.parameters()}
    was_training = model.training
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            if callable(example_inputs):
                loss = example_inputs(model)
            else:
                images, labels = example_inputs
                loss = F.cross_entropy(model(images), labels)
            loss.backward()
        grads = {p: p.grad.detach().clone() for p in model.parameters() if p.grad is not None}
    finally:
        for p, g in saved.items():
            p.grad = g
        model.train(was_training)
    return grads


def _take(values: torch.Tensor, index: Sequence[int] | None) -> torch.Tensor:
    if index is None:
        return values
    return values[torch.as_tensor(list(index), dtype=torch.int64)]


@torch.no_grad()
def group_scores(producers: Sequence[Producer], width: int, criterion: str,
                 grads: Mapping[nn.Parameter, torch.Tensor] | None = None) -> torch.Tensor:
    """Importance of each of a group's ``width`` channels (float64, higher = more important).

    Args:
        producers: Convs and BNs writing the group's channels, with their index maps.
        width: Channels in the group.
        criterion: One of :data:`IMPORTANCES`.
        grads: Parameter -> gradient (required for ``taylor``), e.g. from
            :func:`batch_gradients`.
    """
    if criterion not in IMPORTANCES:
        raise ValueError(f"importance must be one of {IMPORTANCES}, got {criterion!r}")
    if criterion == "taylor" and grads is None:
        raise ValueError("importance 'taylor' needs gradients: pass grads= or example_inputs=")
    score = torch.zeros(width, dtype=torch.float64)
    used = 0
    for module, index in producers:
        norm = isinstance(module, _NORMS) and getattr(module, "weight", None) is not None
        if criterion == "l1" and isinstance(module, PRUNABLE_LAYERS):
            per_channel = filter_weights(module).abs().sum(1)
        elif norm and criterion == "bn_scale":
            per_channel = module.weight.detach().abs()
        elif norm and criterion == "taylor" and module.bias is not None:
            g_w = grads.get(module.weight)
            g_b = grads.get(module.bias)
            if g_w is None or g_b is None:
                continue  # a BN the loss does not reach carries no evidence
            # Signed: removing the channel from all producers changes the loss by the sum.
            per_channel = module.weight.detach() * g_w + module.bias.detach() * g_b
        else:
            continue
        score += _take(per_channel.to(device="cpu", dtype=torch.float64), index)
        used += 1
    if used == 0:
        if criterion != "l1":
            # No normalisation layer writes these channels (e.g. a Linear hidden layer):
            # fall back to the filters' L1 norm rather than refusing the group.
            return group_scores(producers, width, "l1")
        raise ValueError(f"importance {criterion!r} found no conv/BN producing this group")
    return score.abs() if criterion == "taylor" else score


def keep_top_periodic(scores: torch.Tensor, keep: int, multiple: int) -> list[int]:
    """Like :func:`keep_top` for a group feeding a grouped conv with ``multiple`` groups: the
    ``keep // multiple`` positions with the highest score summed over the ``multiple`` blocks,
    the same positions in every block (what a grouped conv's weight layout allows)."""
    if multiple <= 1:
        return keep_top(scores, keep)
    width = len(scores)
    if width % multiple or keep % multiple:
        raise ValueError(f"width {width} and keep {keep} must be multiples of {multiple}")
    block = width // multiple
    positions = keep_top(scores.view(multiple, block).sum(0), keep // multiple)
    return [b * block + p for b in range(multiple) for p in positions]


def keep_top(scores: torch.Tensor, keep: int) -> list[int]:
    """Indices of the ``keep`` highest scores, ascending; ties go to the lower index."""
    if not 1 <= keep <= len(scores):
        raise ValueError(f"keep must be in [1, {len(scores)}], got {keep}")
    # Stable sort of the negated scores: equal scores keep index order, so the choice is
    # deterministic across runs and platforms.
    order = torch.sort(-scores, stable=True).indices[:keep]
    return sorted(int(i) for i in order)
