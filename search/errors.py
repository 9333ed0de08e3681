"""The root of every exception prunesearch raises for bad input.

It lives in the lowest layer (``search`` imports neither torch nor the other packages), so
that ``search``, ``methods`` and ``cluster`` can all derive from it;
:mod:`prunesearch.methods.errors` re-exports it with the rest of the tree. Every exception class
of the project derives from :class:`PrunesearchError` (and from the builtin whose meaning it
keeps: ``ValueError``, ``FileNotFoundError``, ...). Its ``exit_code`` tells the CLI how to end:
2 (the default) for bad input the user can fix -- printed as one line --, 1 for failures of a
run (a dead evaluator pool), which keep their traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "PrunesearchError"]


class PrunesearchError(Exception):
    """Root of every prunesearch exception; by default bad input (a one-line message).

    Attributes:
        exit_code: The CLI's exit code for this error: 2 for bad input (one line on stderr),
            1 for a failed run.
    """

    exit_code: int = 2


class ConfigError(PrunesearchError, ValueError):
    """A configuration value is invalid. The message is one line naming key, value and rule."""
