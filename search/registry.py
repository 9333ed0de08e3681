"""Search algorithms by name (the config's ``method``).

| name                | algorithm                                                          |
|---------------------|--------------------------------------------------------------------|
| `hamp`              | :class:`~prunesearch.search.hamp.HAMP` (portfolio + local search)   |
| `nsga2`             | pymoo's NSGA-II (:class:`~prunesearch.search.baselines.NSGA2Search`) |
| `random`            | random search (:class:`~prunesearch.search.baselines.RandomSearch`) |
| `hamp-no-ls`        | HAMP's portfolio selection without its surrogate-assisted step    |
|                     | (no local-search moves and no offspring pre-screening)              |
| `hamp-no-portfolio` | HAMP's local search with NSGA-II selection only                    |
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pymoo.core.algorithm import Algorithm

from prunesearch.search.baselines import NSGA2Search, RandomSearch
from prunesearch.search.hamp import HAMP
from prunesearch.search.settings import SearchSettings

__all__ = ["ALGORITHMS", "make_algorithm"]

ALGORITHMS = ("hamp", "nsga2", "random", "hamp-no-ls", "hamp-no-portfolio")


def make_algorithm(method: str, settings: SearchSettings | None = None,
                   **overrides: Any) -> Algorithm:
    """Build the pymoo algorithm for ``method`` from the ``search`` settings.

    Args:
        method: One of :data:`ALGORITHMS`.
        settings: The ``search`` config section (defaults: ``SearchSettings()``, which gives
            ``HAMP()``'s tuned defaults for ``hamp``).
        **overrides: Keyword arguments passed on to the algorithm's constructor, replacing the
            values taken from ``settings`` (e.g. ``pop_size=20`` in tests).

    Raises:
        ValueError: ``method`` is not one of :data:`ALGORITHMS`.
    """
    if method not in ALGORITHMS:
        raise ValueError(f"unknown search method {method!r}; valid: {', '.join(ALGORITHMS)}")
    s = settings or SearchSettings()
    if method in ("nsga2", "random"):
        kwargs: dict[str, Any] = {"pop_size": s.pop_size, **overrides}
        return NSGA2Search(**kwargs) if method == "nsga2" else RandomSearch(**kwargs)
    kwargs = {
        "pop_size": s.pop_size,
        "portfolio": s.portfolio,
        "credit_window": s.credit_window,
        "min_probability": s.min_probability,
        "local_search": s.local_search,
        "surrogate": s.surrogate,
    }
    if method == "hamp-no-ls":
        # The whole surrogate-assisted step off: neither neighbour moves nor pre-screening.
        kwargs["local_search"] = dataclasses.replace(s.local_search, max_moves=0,
                                                     offspring_pool=1)
    elif method == "hamp-no-portfolio":
        kwargs["portfolio"] = ("nsga2",)
    kwargs.update(overrides)
    return HAMP(**kwargs)
