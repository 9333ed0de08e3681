"""The exception tree of ``prunesearch.methods``.

Every error a user can fix (a missing dataset, an unknown name) derives from
:class:`PrunesearchError`, so the CLI can turn it into one line and exit code 2. The second base
class keeps the standard meaning (``FileNotFoundError``, ``ValueError``) for callers that catch
those.
"""

from __future__ import annotations

__all__ = ["DataNotFoundError", "PrunesearchError", "UnknownNameError"]


class PrunesearchError(Exception):
    """Root of the errors raised for bad input (one-line, user-facing messages)."""


class DataNotFoundError(PrunesearchError, FileNotFoundError):
    """A dataset, pretrained weight file or checkpoint is missing; the message names the folder
    searched and the layout expected there."""


class UnknownNameError(PrunesearchError, ValueError):
    """A registry lookup failed; the message lists the valid names."""


class RunStateError(PrunesearchError, ValueError):
    """A run directory cannot be continued as asked: it already holds a search, or its journal
    and checkpoint do not match (the message says which and what to do)."""


class UsageError(PrunesearchError, ValueError):
    """Bad command-line input (a path, a pick, an option)."""
