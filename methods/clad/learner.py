"""CLAD's criterion learner: per-filter descriptors, one small network per layer, soft masks.

For every pruned group (a block's first conv, optionally a stage width) the learner reads only
the filter parameters of the group's producers, so the learned criterion is data-independent:

1. :func:`filter_descriptors`: per filter ``[L1, L2, FPGM distance, mean, std, max|w|, BN
   |gamma|]`` (:data:`DESCRIPTORS`), summed over the group's producing convs/BNs and
   z-normalised within the layer (:func:`znorm`);
2. :class:`LayerLearner`: ``score = a . d + MLP(d)`` (MLP ``7 -> width -> 1`` with ReLU; the
   linear skip ``a`` starts at the L1 descriptor with ``prior='l1'``, so training starts from
   the L1 ranking and moves away where the loss says so);
3. :func:`keep_mask`: a differentiable mask keeping the layer's ``keep`` best filters, either
   ``sigmoid((z - tau) / T)`` with the threshold ``tau`` halfway between the ``keep``-th and
   ``keep+1``-th z-scored score (detached) and an annealed temperature ``T``, or a hard top-k
   in the forward pass with that sigmoid's gradient (straight-through);
4. :class:`ChannelMasks`: forward hooks multiplying each group's mask into the outputs of its
   producing BNs (convs when a group has no BN), i.e. after normalisation, so a masked channel
   is exactly a removed one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Self

import torch
from torch import nn

from prunesearch.methods.pruning.importance import Producer, keep_top
from prunesearch.methods.pruning.layers import BATCH_NORMS, CONVOLUTIONS, CONVS, filter_weights
from prunesearch.methods.pruning.space import GenomeSpace

__all__ = [
    "DESCRIPTORS",
    "ChannelMasks",
    "CriterionLearner",
    "LayerLearner",
    "filter_descriptors",
    "group_producers",
    "hard_mask",
    "keep_mask",
    "znorm",
]

DESCRIPTORS = ("l1", "l2", "fpgm", "mean", "std", "max_abs", "bn_scale")


def group_producers(model: nn.Module, space: GenomeSpace) -> dict[str, list[Producer]]:
    """Group name -> the convs and BNs writing that group's channels (the pruning core's map:
    our own for CIFAR ResNets and the digits CNN, Torch-Pruning's for torchvision models)."""
    from prunesearch.methods.models import CifarResNet, DigitsCNN
    from prunesearch.methods.pruning.surgery import own_producers
    from prunesearch.methods.pruning.tp_groups import tp_producers

    if isinstance(model, (CifarResNet, DigitsCNN)):
        producers = own_producers(model)
    else:
        producers = tp_producers(model, input_shape=space.input_shape)
    if list(producers) != space.names:
        raise ValueError(f"the model's groups {list(producers)} do not match the genome space "
                         f"{space.names}")
    return producers


def _take(values: torch.Tensor, index: Sequence[int] | None) -> torch.Tensor:
    if index is None:
        return values
    return values[torch.as_tensor(list(index), dtype=torch.int64, device=values.device)]


@torch.no_grad()
def filter_descriptors(producers: Sequence[Producer], width: int) -> torch.Tensor:
    """Raw per-filter descriptors of one group, ``(width, len(DESCRIPTORS))`` float32.

    Columns follow :data:`DESCRIPTORS`. Conv columns are summed over the group's producing
    convs (a stage width has several), ``bn_scale`` over its producing BNs (0 without BN).
    ``fpgm`` is FPGM's criterion: the sum of Euclidean distances from a filter to every other
    filter of its conv (He et al. 2019; small = close to the geometric median = redundant).
    """
    out = torch.zeros(width, len(DESCRIPTORS), dtype=torch.float32)
    convs = 0
    for module, index in producers:
        if isinstance(module, CONVOLUTIONS):
            w = _take(filter_weights(module), index).to("cpu", torch.float32)
            cols = torch.stack([
                w.abs().sum(1),
                w.norm(dim=1),
                torch.cdist(w.unsqueeze(0), w.unsqueeze(0)).squeeze(0).sum(1),
                w.mean(1),
                w.std(1, unbiased=False),
                w.abs().amax(1),
            ], dim=1)
            out[:, :6] += cols
            convs += 1
        elif isinstance(module, BATCH_NORMS) and module.affine:
            out[:, 6] += _take(module.weight.detach(), index).abs().to("cpu", torch.float32)
    if convs == 0:
        raise ValueError("a group has no producing conv to describe")
    return out


def znorm(values: torch.Tensor, dim: int = 0, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` along ``dim`` (population std); a constant column becomes 0."""
    mean = values.mean(dim=dim, keepdim=True)
    std = values.std(dim=dim, keepdim=True, unbiased=False)
    return torch.where(std > eps, (values - mean) / std.clamp_min(eps), torch.zeros_like(values))


class LayerLearner(nn.Module):
    """One layer's criterion: ``score_i = a . d_i + MLP(d_i)`` on z-scored descriptors.

    Args:
        num_features: Descriptor columns.
        width: Hidden units of the MLP.
        prior: ``l1``: ``a`` starts as the indicator of the L1 column and the MLP's output
            layer near zero (scores start as the z-scored L1 norm); ``none``: ``a`` starts at
            zero and the MLP at PyTorch's default initialisation.
    """

    def __init__(self, num_features: int = len(DESCRIPTORS), width: int = 16,
                 prior: str = "l1") -> None:
        super().__init__()
        if prior not in ("l1", "none"):
            raise ValueError(f"prior must be 'l1' or 'none', got {prior!r}")
        self.skip = nn.Linear(num_features, 1, bias=False)
        # No output bias: scores are z-normalised per layer, so a constant shift is void.
        self.mlp = nn.Sequential(nn.Linear(num_features, width), nn.ReLU(),
                                 nn.Linear(width, 1, bias=False))
        with torch.no_grad():
            self.skip.weight.zero_()
            if prior == "l1":
                self.skip.weight[0, DESCRIPTORS.index("l1")] = 1.0
                # Small but non-zero: gradients reach the hidden layer from the first step.
                nn.init.normal_(self.mlp[2].weight, std=1e-3)

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        """``(C, F)`` z-scored descriptors -> ``(C,)`` scores (higher = keep)."""
        return (self.skip(descriptors) + self.mlp(descriptors)).squeeze(1)


def _key(group: str) -> str:
    return group.replace(".", "__")  # ModuleDict keys may not contain dots


class CriterionLearner(nn.Module):
    """The learners of all pruned groups (separate parameters per layer).

    Args:
        groups: Names of the pruned groups.
        width: Hidden units of each MLP.
        prior: See :class:`LayerLearner`.
    """

    def __init__(self, groups: Sequence[str], *, width: int = 16, prior: str = "l1") -> None:
        super().__init__()
        self.groups = list(groups)
        self.learners = nn.ModuleDict({_key(g): LayerLearner(width=width, prior=prior)
                                       for g in self.groups})

    def forward(self, descriptors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Group -> scores, from group -> z-scored descriptors."""
        return {g: self.learners[_key(g)](descriptors[g]) for g in self.groups}


def keep_mask(scores: torch.Tensor, keep: int, *, temperature: float,
              mode: str = "sigmoid") -> torch.Tensor:
    """Differentiable mask keeping about the ``keep`` highest ``scores``.

    Scores are z-normalised first (so the temperature is in standard deviations); the threshold
    sits halfway between the ``keep``-th and ``keep+1``-th z-score and is detached.

    Args:
        scores: ``(C,)`` scores of one layer.
        keep: Filters to keep, ``1 .. C`` (``C``: all ones).
        temperature: Sigmoid temperature ``T`` (> 0).
        mode: ``sigmoid`` (soft mask) or ``ste`` (hard top-k forward, sigmoid gradient).
    """
    width = scores.numel()
    if not 1 <= keep <= width:
        raise ValueError(f"keep must be in [1, {width}], got {keep}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if mode not in ("sigmoid", "ste"):
        raise ValueError(f"mode must be 'sigmoid' or 'ste', got {mode!r}")
    if keep == width:
        return torch.ones_like(scores)
    z = znorm(scores)
    ordered = torch.sort(z.detach(), descending=True).values
    threshold = 0.5 * (ordered[keep - 1] + ordered[keep])
    soft = torch.sigmoid((z - threshold) / temperature)
    if mode == "sigmoid":
        return soft
    return hard_mask(scores, keep).to(soft) + soft - soft.detach()


def hard_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """0/1 mask of the ``keep`` highest scores (ties to the lower index, as the pruning core)."""
    mask = torch.zeros(scores.numel(), dtype=torch.float32, device=scores.device)
    kept = keep_top(scores.detach().to("cpu", torch.float64), keep)
    mask[torch.as_tensor(kept, dtype=torch.int64, device=scores.device)] = 1.0
    return mask


class ChannelMasks:
    """Forward hooks multiplying group masks into the outputs of the groups' producers.

    The mask of a group goes on every producing BN (after normalisation, so BN statistics are
    those of the unmasked network and a zeroed channel is a removed one); a group without BN
    is masked at its convs. In a CIFAR ResNet (pass ``model``) a stage width's mask also goes
    on the output of every block of the stage: the parameter-free option-A shortcut of a
    stage's first block copies kept channels of the previous stage into channels this stage
    prunes, so masking the producers alone would leave them alive.

    Set :attr:`masks` (group -> ``(C,)`` tensor) before each forward; groups absent from it are
    not masked. Hooks are prepended, so feature taps on the same modules see masked outputs.

    Args:
        producers: Group -> producers (:func:`group_producers`).
        groups: The groups that may be masked.
        model: The network the producers belong to (needed for CIFAR ResNet stage widths).
    """

    def __init__(self, producers: Mapping[str, Sequence[Producer]], groups: Sequence[str],
                 model: nn.Module | None = None) -> None:
        from prunesearch.methods.models import CifarResNet

        self.masks: dict[str, torch.Tensor] = {}
        self._handles = []
        block_outputs: dict[str, list[nn.Module]] = {}
        if isinstance(model, CifarResNet):
            block_outputs = {f"stage{s + 1}": list(stage) for s, stage in enumerate(model.stages())}
        for group in groups:
            members = list(producers[group])
            targets = [(m, i) for m, i in members if isinstance(m, BATCH_NORMS)] or \
                      [(m, i) for m, i in members if isinstance(m, CONVS)]
            targets += [(block, None) for block in block_outputs.get(group, [])]
            for module, index in targets:
                self._handles.append(module.register_forward_hook(
                    self._hook(group, index), prepend=True))

    def _hook(self, group: str, index: Sequence[int] | None):
        idx = None if index is None else torch.as_tensor(list(index), dtype=torch.int64)

        def apply(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            mask = self.masks.get(group)
            if mask is None:
                return None
            mask = mask.to(output)
            if idx is not None:
                full = torch.ones(output.shape[1], dtype=output.dtype, device=output.device)
                mask = full.index_copy(0, idx.to(output.device), mask)
            return output * mask.view(1, -1, *([1] * (output.ndim - 2)))
        return apply

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.masks = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
