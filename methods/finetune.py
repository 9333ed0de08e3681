"""The final fine-tune of a chosen network (plain PyTorch: no Ray).

A search fine-tunes every candidate for a few dozen steps; a network a user ships gets a full
fine-tune: SGD with momentum and a cosine learning-rate schedule over ``epochs`` epochs of the
training split, random crop + flip where the images allow it, and optionally distillation from
the dense teacher (``kd``: logits at a temperature; ``attention``: attention transfer at every
stage, plus KD). The loss is ``(1 - a) CE + a KD`` (``a = kd_weight``) plus
``attention_weight * AT`` when ``distill: attention``.

After every epoch a checkpoint of *data only* is
written atomically (state dicts, epoch, history); :func:`final_finetune` given the same checkpoint path continues from it, and
because each epoch's data order comes from ``(seed, epoch)`` alone, an interrupted and resumed
fine-tune ends with the same weights as an uninterrupted one (one CPU thread).
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.methods.io import atomic_write_bytes
from prunesearch.methods.models.training import param_groups
from prunesearch.methods.settings import DISTILL_MODES, FinetuneSettings

__all__ = ["DISTILL_MODES", "FinetuneResult", "FinetuneSettings", "final_finetune"]


@dataclasses.dataclass
class FinetuneResult:
    """Outcome of :func:`final_finetune`.

    Attributes:
        module: the fine-tuned network (eval mode, on the training device).
        epochs: epochs completed (all of them unless interrupted).
        resumed_from: epoch the run continued from (0: a fresh start).
        history: per epoch ``{"epoch", "loss", "lr"}``.
    """

    module: nn.Module
    epochs: int
    resumed_from: int
    history: list[dict[str, float]]




def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch), 11]).generate_state(1)[0])


def _save_checkpoint(path: Path, data: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(data, buffer)
    atomic_write_bytes(path, buffer.getvalue(), unique=True)


def final_finetune(module: nn.Module, train: Any, settings: FinetuneSettings, *, seed: int,
                   teacher: nn.Module | None = None, augment: bool = True,
                   device: str | torch.device = "cpu", checkpoint: str | Path | None = None,
                   on_epoch: Callable[[int, dict[str, float]], None] | None = None
                   ) -> FinetuneResult:
    """Fine-tune ``module`` in place (see the module docstring).

    Args:
        module: the pruned network (its architecture must match any checkpoint).
        train: training ``ImageTensorDataset`` (already subset by the caller if wanted).
        settings: the ``finetune`` section.
        seed: seeds every epoch's data order and augmentation.
        teacher: the dense network (required for ``distill`` other than ``none``).
        augment: apply random crop + flip (the caller knows whether the images allow it).
        device: training device.
        checkpoint: per-epoch checkpoint file; an existing one is continued from.
        on_epoch: called after each epoch's checkpoint with ``(epoch, record)`` (1-based).

    Raises:
        ValueError: distillation without a teacher, or a checkpoint of another architecture.
        FloatingPointError: the loss diverged.
    """
    from prunesearch.methods.data import augment_batch
    from prunesearch.methods.distill import FeatureTaps, attention_loss, kd_loss, stage_names

    s = settings
    if s.distill != "none" and teacher is None:
        raise ValueError(f"distill '{s.distill}' needs the dense teacher")
    device = torch.device(device)
    module.to(device)
    optimizer = torch.optim.SGD(param_groups(module, s.weight_decay), lr=s.lr,
                                momentum=s.momentum, nesterov=s.momentum > 0)
    steps_per_epoch = len(train) // s.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"the training set ({len(train)} images) is smaller than one batch of "
                         f"{s.batch_size}")
    total = s.epochs * steps_per_epoch
    start_epoch, history = 0, []
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            module.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ValueError(f"checkpoint '{path}' holds another architecture: "
                             f"{str(exc).splitlines()[0]}") from None
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
    resumed_from = start_epoch
    if teacher is not None:
        teacher = teacher.to(device).eval()
    names = stage_names(module) if s.distill == "attention" else []

    for epoch in range(start_epoch, s.epochs):
        generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        module.train()
        losses = []
        for step, (x, y) in enumerate(train.batches(s.batch_size, shuffle=True,
                                                    generator=generator, drop_last=True)):
            t = epoch * steps_per_epoch + step
            lr = s.lr * 0.5 * (1.0 + math.cos(math.pi * t / total))
            for group in optimizer.param_groups:
                group["lr"] = lr
            if augment:
                x = augment_batch(x, generator=generator)
            x, y = x.to(device), y.to(device)
            if s.distill == "none":
                loss = F.cross_entropy(module(x), y)
            else:
                with FeatureTaps(module, names) as s_taps:
                    logits = module(x)
                with torch.no_grad(), FeatureTaps(teacher, names) as t_taps:
                    teacher_logits = teacher(x)
                loss = ((1.0 - s.kd_weight) * F.cross_entropy(logits, y)
                        + s.kd_weight * kd_loss(logits, teacher_logits, s.temperature))
                if s.distill == "attention":
                    loss = loss + s.attention_weight * attention_loss(s_taps.features,
                                                                      t_taps.features)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"fine-tuning loss is {value} in epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(value)
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": float(lr)}
        history.append(record)
        if path is not None:
            _save_checkpoint(path, {"model": module.state_dict(),
                                    "optimizer": optimizer.state_dict(),
                                    "epoch": epoch + 1, "history": history})
        if on_epoch is not None:
            on_epoch(epoch + 1, record)
    return FinetuneResult(module=module.eval(), epochs=s.epochs, resumed_from=resumed_from,
                          history=history)
