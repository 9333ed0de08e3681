"""User hooks of one candidate evaluation: ``evaluator.finetune_fn`` and ``evaluator.score_fn``.

Both are import paths (``"package.module:function"``), imported where the evaluation runs (an
evaluator actor on any node: the package must be installed there), or ``object:`` names of
functions given to the Python API (shipped in the payload). They let a network that is not a
classifier (detection, segmentation) be searched with the user's own training and metric:

* ``finetune_fn(model, data, *, steps, settings, generator, device) -> float | None``: train
  the pruned ``model`` in place for about ``steps`` steps on ``data.train`` (``data`` is the
  :class:`~prunesearch.methods.data.DataBundle`; ``settings`` the ``evaluator`` section;
  ``generator`` the candidate's seeded ``torch.Generator``); returns a training loss or None.
* ``score_fn(model, data, *, settings, device) -> float``: the pruned, fine-tuned model's
  score on ``data.val`` (never the test split). Its name is ``evaluator.score_name``; with
  ``evaluator.score_direction: maximize`` the search minimises ``1 - score`` (so scores should
  lie in [0, 1], like accuracy, mAP or mIoU), with ``minimize`` the score itself (a loss,
  >= 0). The minimised value is the ``error`` objective of journals and ``pareto.csv``; the
  score itself is recorded under its name in ``metrics``.

Without hooks: SGD fine-tuning with the section's settings and top-1 accuracy (``val_acc``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["error_from_score", "finetune_candidate", "score_candidate"]


def _hook(path: str, key: str) -> Any:
    from prunesearch.methods.errors import ConfigError
    from prunesearch.methods.objects import resolve

    fn = resolve(path, key=key)
    if not callable(fn):
        raise ConfigError(f"{key}: {path!r} is not callable")
    return fn


def error_from_score(score: float, direction: str) -> float:
    """The minimised ``error`` objective of a score (see the module docstring)."""
    return 1.0 - score if direction == "maximize" else score


def finetune_candidate(module: nn.Module, data: Any, settings: Any, *,
                       generator: torch.Generator, device: torch.device) -> float:
    """Fine-tune ``module`` in place by ``settings.finetune_fn`` or the built-in SGD loop.

    Returns:
        The training loss reported (NaN when none is).
    """
    if settings.finetune_fn:
        fn = _hook(settings.finetune_fn, "evaluator.finetune_fn")
        loss = fn(module, data, steps=int(settings.finetune_steps), settings=settings,
                  generator=generator, device=device)
        return float(loss) if loss is not None else float("nan")
    from prunesearch.methods.models.training import finetune

    return finetune(module, data.train, steps=settings.finetune_steps, lr=settings.lr,
                    momentum=settings.momentum, weight_decay=settings.weight_decay,
                    batch_size=settings.batch_size,
                    augment=settings.augmentation and data.augmentable, generator=generator,
                    device=device, augment_ops=getattr(data, "augment_ops", ("crop", "flip")),
                    padding=getattr(data, "crop_padding", 4))


def score_candidate(module: nn.Module, data: Any, settings: Any, *,
                    device: torch.device) -> tuple[float, dict[str, float]]:
    """``(error objective, {score_name: score})`` of the fine-tuned ``module`` on ``data.val``.

    Raises:
        FloatingPointError: the score is not finite.
    """
    if settings.score_fn:
        fn = _hook(settings.score_fn, "evaluator.score_fn")
        module.eval()
        score = float(fn(module, data, settings=settings, device=device))
    else:
        from prunesearch.methods.models.training import evaluate_error

        score = 1.0 - evaluate_error(module, data.val, max_batches=settings.val_batches,
                                     device=device)
    if not math.isfinite(score):
        raise FloatingPointError(f"{settings.score_name} is {score}")
    return error_from_score(score, settings.score_direction), {settings.score_name: score}
