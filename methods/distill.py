"""Knowledge distillation from a dense teacher: logit KD and attention transfer.

* :func:`kd_loss`: Hinton et al. (2015), KL divergence between temperature-softened teacher and
  student distributions, scaled by ``T^2`` so its gradients keep their size as ``T`` changes.
* :func:`attention_loss`: Zagoruyko & Komodakis (2017), attention transfer. A stage's attention
  map is ``Q = normalise(flatten(mean_c(A^2)))`` (channel mean of the squared activations, L2
  normalised per image), which does not depend on the channel count, so a pruned student can
  match its dense teacher stage by stage. The loss is ``mean((Qs - Qt)^2)`` averaged over stages.
* :class:`FeatureTaps` captures the stage outputs named by :func:`stage_names` with forward
  hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureTaps", "attention_loss", "attention_map", "kd_loss", "stage_names"]


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` activations -> ``(N, H*W)`` L2-normalised spatial attention."""
    if features.ndim != 4:
        raise ValueError(f"features must be (N, C, H, W), got shape {tuple(features.shape)}")
    return F.normalize(features.pow(2).mean(dim=1).flatten(1), dim=1)


def attention_loss(student_feats: Sequence[torch.Tensor],
                   teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention-transfer loss averaged over stages (teacher maps carry no gradient)."""
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(f"need the same number (>= 1) of student and teacher stages, got "
                         f"{len(student_feats)} and {len(teacher_feats)}")
    losses = []
    for s, t in zip(student_feats, teacher_feats):
        if s.shape[-2:] != t.shape[-2:]:
            raise ValueError(f"stage maps differ in size: student {tuple(s.shape)}, teacher "
                             f"{tuple(t.shape)}")
        losses.append((attention_map(s) - attention_map(t).detach()).pow(2).mean())
    return torch.stack(losses).mean()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = 4.0) -> torch.Tensor:
    """KL(teacher || student) at ``temperature``, times ``temperature**2``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t = float(temperature)
    log_student = F.log_softmax(student_logits / t, dim=1)
    teacher = F.softmax(teacher_logits.detach() / t, dim=1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * (t * t)


def stage_names(model: nn.Module) -> list[str]:
    """Names of the modules whose outputs are the network's stages (attention transfer points).

    CIFAR and torchvision ResNets: ``layer1``.. (every residual stage); the digits CNN: its BN
    layers (one per conv). Pruning keeps these names and spatial sizes, so teacher and student
    taps line up.

    Raises:
        ValueError: the model has no known stages.
    """
    from prunesearch.methods.models import DigitsCNN

    if isinstance(model, DigitsCNN):
        return ["bn1", "bn2", "bn3"]
    modules = dict(model.named_children())
    stages = [f"layer{i}" for i in range(1, 5) if f"layer{i}" in modules]
    if stages:
        return stages
    raise ValueError(f"no known stages in {type(model).__name__} for attention transfer "
                     "(expected layer1.. children, as ResNets have)")


class FeatureTaps:
    """Context manager capturing the outputs of ``model``'s modules ``names`` on each forward.

    ``taps.features`` holds the latest outputs, in ``names`` order (refilled by every forward).
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"{type(model).__name__} has no modules {missing}")
        self._modules = [modules[n] for n in names]
        self._handles: list[Any] = []
        self.features: list[torch.Tensor] = []

    def __enter__(self) -> FeatureTaps:  # noqa: PYI034 - one concrete class
        self.features = [torch.empty(0)] * len(self._modules)

        def hook(index: int):
            def store(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
                self.features[index] = output
            return store

        self._handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self._modules)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
