"""Plain training and evaluation loops (no Ray, no pymoo): training a base model, and the
pieces every candidate evaluation uses (BN recalibration, a short fine-tune, validation error)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.methods.data import DataBundle, ImageTensorDataset, augment_batch

__all__ = ["accuracy", "evaluate_error", "finetune", "recalibrate_bn", "train_base_model"]


def train_base_model(model: nn.Module, bundle: DataBundle, *, epochs: int, seed: int,
                     batch_size: int = 128, lr: float = 0.05, momentum: float = 0.9,
                     weight_decay: float = 5e-4) -> nn.Module:
    """Train ``model`` in place on ``bundle.train`` with SGD and a cosine schedule.

    Random crop + flip augmentation is used when ``bundle.augmentable``. Shuffling and
    augmentation draw from a generator seeded with ``seed`` (the result is repeatable on CPU
    with a fixed thread count).

    Returns:
        The same ``model``, in eval mode.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout-free models still draw nothing else; kept for safety
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay, nesterov=True)
    steps_per_epoch = max(1, math.ceil(len(bundle.train) / batch_size))
    total = max(1, epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    model.train()
    for _ in range(epochs):
        for x, y in bundle.train.batches(batch_size, shuffle=True, generator=generator):
            if bundle.augmentable:
                x = augment_batch(x, generator=generator, padding=bundle.crop_padding,
                                  ops=bundle.augment_ops)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, dataset: ImageTensorDataset, *, batch_size: int = 500,
             max_batches: int | None = None) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``dataset`` (optionally its first batches)."""
    was_training = model.training
    model.eval()
    correct = seen = 0
    for b, (x, y) in enumerate(dataset.batches(batch_size)):
        if max_batches is not None and b >= max_batches:
            break
        correct += int((model(x).argmax(1) == y).sum())
        seen += len(y)
    model.train(was_training)
    return correct / max(seen, 1)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """SGD parameter groups with no weight decay on BN parameters and biases (the standard
    recipe, and HALP's official training config)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
            (no_decay if is_bn or name == "bias" else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def recalibrate_bn(module: nn.Module, batches: Sequence[torch.Tensor] | Any) -> int:
    """Re-estimate every BatchNorm's running statistics from ``batches`` (inputs only).

    Statistics are reset and accumulated as a cumulative average over the batches (momentum
    None), with no gradient step: after pruning, the surviving channels' statistics shift
    because their inputs lost channels, and this alone recovers much of the accuracy.

    Returns:
        The number of batches used (0 leaves the module untouched).
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    batches = list(batches)
    if not bns or not batches:
        return 0
    momenta = [bn.momentum for bn in bns]
    was_training = module.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    module.train()
    with torch.no_grad():
        for x in batches:
            module(x)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    module.train(was_training)
    return len(batches)


def finetune(module: nn.Module, dataset: Any, *, steps: int, lr: float, momentum: float,
             weight_decay: float, batch_size: int, augment: bool,
             generator: torch.Generator, device: torch.device,
             augment_ops: Sequence[str] = ("crop", "flip"), padding: int = 4) -> float:
    """A few SGD steps on ``dataset`` (an ``ImageTensorDataset``), in place.

    Batches are drawn in a shuffled order from ``generator`` (epochs restart as needed).

    Returns:
        The mean loss of the last (up to) 10 steps (NaN when ``steps`` is 0).

    Raises:
        FloatingPointError: the loss became NaN or infinite (diverged).
    """
    from prunesearch.methods.data import augment_batch

    if steps <= 0:
        return float("nan")
    optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    module.train()
    losses: list[float] = []
    done = 0
    while done < steps:
        for x, y in dataset.batches(batch_size, shuffle=True, generator=generator, drop_last=True):
            if augment:
                x = augment_batch(x, generator=generator, padding=padding, ops=augment_ops)
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(module(x), y)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"fine-tuning loss is {value} at step {done + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(value)
            done += 1
            if done >= steps:
                break
        if not losses and done == 0:
            raise ValueError(f"the training set ({len(dataset)} images) is smaller than one "
                             f"batch of {batch_size}")
    return float(np.mean(losses[-10:]))


def evaluate_error(module: nn.Module, dataset: Any, *, batch_size: int = 500,
                   max_batches: int | None = None, device: torch.device | None = None) -> float:
    """Top-1 error of ``module`` on ``dataset`` (eval mode, no gradients).

    Raises:
        FloatingPointError: the network's outputs are not finite.
    """
    device = device or torch.device("cpu")
    module.eval()
    correct = total = 0
    with torch.inference_mode():
        for i, (x, y) in enumerate(dataset.batches(batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            logits = module(x.to(device))
            if not torch.isfinite(logits).all():
                raise FloatingPointError("the network's outputs are not finite")
            correct += int((logits.argmax(1).cpu() == y).sum())
            total += int(y.numel())
    if total == 0:
        raise ValueError("the validation set is empty")
    return 1.0 - correct / total
