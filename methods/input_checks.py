"""Input checks of the real pruning task, run before a run directory is created.

Everything here is cheap (no training, no data loading, no timing), so the CLI can refuse bad
input with one line before it creates or deletes anything; :class:`~prunesearch.methods.evaluator.
PruningTask` makes the same checks again while it is built, for callers that skip this one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_inputs"]


def check_inputs(config: Any) -> None:
    """Find the bad input a ``PruningTask`` would meet.

    Checks ``data.val_size`` against the dataset's training images (where known statically)
    and ``hardware.granularity`` against the widths of an untrained copy of the model.

    Raises:
        ConfigError: ``data.val_size`` leaves no training images, or the model cannot take
            the data's images (e.g. a 3-channel network on a grayscale folder).
        UsageError: the granularity leaves nothing to search.
    """
    from prunesearch.methods.data import check_val_size, dataset_info
    from prunesearch.methods.errors import ConfigError, PrunesearchError
    from prunesearch.methods.models import build_base
    from prunesearch.methods.pruning import genome_space

    if config.data.factory is not None or config.model.factory is not None:
        # User code builds these: the task checks them when it is built (loading a user's
        # data or model twice just to check it could be slow).
        return
    info = dataset_info(config.data)
    if info.train_size is not None:
        check_val_size(config.data, info.train_size)
    model = build_base(config.model, info.num_classes)
    try:
        space = genome_space(model, config.model.name, config.hardware.granularity,
                             input_shape=info.input_shape)
    except ValueError as exc:
        if isinstance(exc, PrunesearchError):
            raise
        # The model cannot take the data (channels, input layout): a config error, one line.
        raise ConfigError(f"model.name {config.model.name!r} on data "
                          f"{config.data.source!r}: {exc}") from None
    space.check_searchable(config.model.name)
