"""Distillation losses: attention transfer (Zagoruyko & Komodakis, 2017) and logit KD.

The attention map of a feature tensor ``A`` (N, C, H, W) is the channel mean of ``A**2``,
flattened and L2-normalised per sample, ``Q(A)`` of shape (N, H*W). Channel counts may differ
between student and teacher (a pruned network has fewer channels): only the spatial size must
match. :func:`attention_loss` averages ``mean((Q_S - Q_T)**2)`` over the stages.

Feature maps are captured with :class:`FeatureTaps`, forward hooks on named modules (the stage
outputs of :func:`stage_names` by default)::

    names = stage_names(teacher)
    with FeatureTaps(student, names) as s_taps, FeatureTaps(teacher, names) as t_taps:
        logits = student(x)
        with torch.no_grad():
            teacher(x)
        loss = F.cross_entropy(logits, y) + 1000 * attention_loss(s_taps.features,
                                                                   t_taps.features)

Teacher inputs (features and logits) are detached inside the losses: the teacher is a fixed
target.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Self

import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.methods.pruning.layers import BATCH_NORMS, CONVS

__all__ = ["FeatureTaps", "attention_loss", "attention_map", "kd_loss", "stage_names"]


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Spatial attention map ``Q(A)``: L2-normalised flatten of the channel mean of ``A**2``.

    Args:
        features: ``(N, C, H, W)`` activations (or ``(N, C, L)`` of a sequence network).

    Returns:
        ``(N, H*W)`` (``(N, L)``) tensor whose rows have unit L2 norm (all-zero rows stay
        zero).
    """
    if features.ndim not in (3, 4):
        raise ValueError(f"features must be (N, C, H, W) or (N, C, L), got shape "
                         f"{tuple(features.shape)}")
    return F.normalize(features.pow(2).mean(dim=1).flatten(1), p=2.0, dim=1)


def attention_loss(student_feats: Sequence[torch.Tensor],
                   teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention-transfer loss: mean over stages of ``mean((Q(S_j) - Q(T_j))**2)``.

    Args:
        student_feats: One ``(N, C_s, H, W)`` tensor per stage.
        teacher_feats: The teacher's tensors of the same stages (``C_t`` may differ from
            ``C_s``; ``N``, ``H`` and ``W`` must match). Detached: no gradient reaches the
            teacher.

    Returns:
        A scalar tensor, 0 for identical features.

    Raises:
        ValueError: the lists are empty or of different lengths, or a stage's shapes differ.
    """
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"attention_loss got {len(student_feats)} student and "
                         f"{len(teacher_feats)} teacher feature maps; they must pair up")
    if not student_feats:
        raise ValueError("attention_loss needs at least one pair of feature maps")
    losses = []
    for j, (s, t) in enumerate(zip(student_feats, teacher_feats)):
        if s.ndim not in (3, 4) or s.ndim != t.ndim or s.shape[0] != t.shape[0] \
                or s.shape[2:] != t.shape[2:]:
            raise ValueError(f"stage {j}: student {tuple(s.shape)} and teacher {tuple(t.shape)} "
                             "must share batch and spatial size")
        losses.append((attention_map(s) - attention_map(t.detach())).pow(2).mean())
    return torch.stack(losses).mean()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = 4.0) -> torch.Tensor:
    """Hinton et al.'s distillation loss ``T**2 * KL(softmax(t/T) || softmax(s/T))``.

    Args:
        student_logits: ``(N, K)`` logits of the student.
        teacher_logits: ``(N, K)`` logits of the teacher (detached).
        temperature: Softening temperature ``T`` (> 0).

    Returns:
        A scalar tensor (batch mean), 0 for identical logits.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"logit shapes differ: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)}")
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


def stage_names(model: nn.Module) -> list[str]:
    """Names of the modules whose outputs are the network's stage outputs.

    CIFAR and torchvision ResNets: ``layer1`` .. ``layerN`` (every consecutive ``layerK``
    attribute). Other networks (fallback): for each top-level child that holds a BatchNorm (a
    convolution in networks without BN; 1-D or 2-D), the last such module inside it, in module
    order; e.g. ``bn1, bn2, bn3`` for the digits CNN, ``features.18.1`` for MobileNetV2.

    Raises:
        ValueError: the network has neither ResNet stages nor convolutions.
    """
    names = []
    k = 1
    while isinstance(getattr(model, f"layer{k}", None), nn.Module):
        names.append(f"layer{k}")
        k += 1
    if names:
        return names
    kind = BATCH_NORMS if any(isinstance(m, BATCH_NORMS) for m in model.modules()) else CONVS
    for child_name, child in model.named_children():
        found = [n for n, m in child.named_modules() if isinstance(m, kind)]
        if found:
            names.append(".".join(p for p in (child_name, found[-1]) if p))
    if not names:
        raise ValueError(f"{type(model).__name__} has no layerK stages and no convolutions to "
                         "take attention maps from")
    return names


class FeatureTaps:
    """Capture the outputs of named submodules on every forward pass of ``model``.

    Use as a context manager (hooks are removed on exit) or call :meth:`close`. The captured
    tensors of the latest forward are :attr:`features`, in the order of ``names``; a forward
    pre-hook on ``model`` clears them when a new forward starts, so they never mix passes. A
    module called several times in one pass keeps its last output.

    Args:
        model: The network to tap.
        names: Dotted module names (``model.named_modules()``), e.g. :func:`stage_names`.

    Raises:
        ValueError: a name is not a submodule of ``model``.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise ValueError(f"FeatureTaps: {unknown} are not modules of "
                             f"{type(model).__name__}")
        self.names = list(names)
        self._captured: dict[str, torch.Tensor] = {}
        self._handles = [model.register_forward_pre_hook(self._clear)]
        for name in self.names:
            self._handles.append(modules[name].register_forward_hook(self._keeper(name)))

    def _clear(self, module: nn.Module, args: tuple) -> None:
        self._captured = {}

    def _keeper(self, name: str):
        def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self._captured[name] = output
        return keep

    @property
    def features(self) -> list[torch.Tensor]:
        """Outputs of the tapped modules in the latest forward pass, in ``names`` order."""
        return [self._captured[n] for n in self.names if n in self._captured]

    def clear(self) -> None:
        """Drop the captured tensors (frees their memory between passes)."""
        self._captured = {}

    def close(self) -> None:
        """Remove the hooks. The last pass's :attr:`features` stay readable (a training step
        typically runs the forward inside the block and the loss after it); :meth:`clear`
        drops them."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
