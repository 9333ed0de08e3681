"""The exception tree of prunesearch (its root and ``ConfigError`` live in
:mod:`prunesearch.search.errors`, the lowest layer, and are re-exported here).

Every error a user can fix (a bad config value, a missing dataset, an unknown name) derives
from :class:`PrunesearchError`, so the CLI can turn it into one line and exit code 2. The second
base
class keeps the standard meaning (``FileNotFoundError``, ``ValueError``) for callers that catch
those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from prunesearch.search.errors import ConfigError, PrunesearchError

__all__ = [
    "ConfigError",
    "DataNotFoundError",
    "ModelTraceError",
    "PrunesearchError",
    "RunStateError",
    "UnknownNameError",
    "UsageError",
    "lookup",
]


class DataNotFoundError(PrunesearchError, FileNotFoundError):
    """A dataset, pretrained weight file or checkpoint is missing; the message names the folder
    searched and the layout expected there."""


class ModelTraceError(PrunesearchError, ValueError):
    """A network cannot be traced or pruned along its dependency graph (it does not run on the
    dataset's input shape, its classifier cannot be found, or Torch-Pruning cannot follow an
    operation); the message names the network or layer and why."""


class UnknownNameError(PrunesearchError, ValueError):
    """A registry lookup failed; the message lists the valid names."""


class RunStateError(PrunesearchError, ValueError):
    """A run directory cannot be continued as asked: it already holds a search, or its journal
    and checkpoint do not match (the message says which and what to do)."""


class UsageError(PrunesearchError, ValueError):
    """Bad command-line input (a path, a pick, an option)."""


T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, *, key: str, kind: str,
           names: Iterable[str] | None = None) -> T:
    """``registry[name]``, or an :class:`UnknownNameError` naming the config ``key`` and listing
    the valid names (in ``names`` order, default the registry's)."""
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(names if names is not None else registry)
        raise UnknownNameError(f"{key} '{name}' is not a known {kind}; valid names: {valid}") from None
