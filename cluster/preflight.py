"""Input checks run before a run directory is created or Ray is started.

Each method names its check in the method registry (``MethodEntry.checker``); every check
raises a :class:`~prunesearch.methods.errors.PrunesearchError` with one line a user can act on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunesearch.methods.errors import UsageError

__all__ = ["check_image_task"]


def check_image_task(config: Any) -> None:
    """Known dataset and model names and an existing checkpoint file, for methods that prune
    an image classifier from the model and dataset registries."""
    if config.evaluator.kind == "synthetic":
        return
    from prunesearch.methods.data import dataset_info
    from prunesearch.methods.models import model_info

    dataset_info(config.data.name)
    model_info(config.model.name)
    if config.model.checkpoint and not Path(config.model.checkpoint).is_file():
        raise UsageError(f"model.checkpoint '{config.model.checkpoint}' does not exist")
