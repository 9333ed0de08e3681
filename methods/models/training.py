"""Plain training and evaluation loops for base models (no Ray, no pymoo)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from prunesearch.methods.data import DataBundle, ImageTensorDataset, augment_batch

__all__ = ["accuracy", "train_base_model"]


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
