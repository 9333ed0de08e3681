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
from collections.abc import Callable
from typing import Any

from pymoo.core.algorithm import Algorithm

from prunesearch.search.baselines import NSGA2Search, RandomSearch
from prunesearch.search.hamp import HAMP
from prunesearch.search.settings import SearchSettings

__all__ = ["ALGORITHMS", "AlgorithmFactory", "make_algorithm", "register_algorithm"]

#: ``factory(settings, **overrides) -> Algorithm``: builds one search from the ``search`` section.
AlgorithmFactory = Callable[..., Algorithm]


def _hamp_kwargs(s: SearchSettings) -> dict[str, Any]:
    return {
        "pop_size": s.pop_size,
        "portfolio": s.portfolio,
        "credit_window": s.credit_window,
        "min_probability": s.min_probability,
        "local_search": s.local_search,
        "surrogate": s.surrogate,
    }


def _hamp(s: SearchSettings, **overrides: Any) -> Algorithm:
    return HAMP(**{**_hamp_kwargs(s), **overrides})


def _hamp_no_ls(s: SearchSettings, **overrides: Any) -> Algorithm:
    # The whole surrogate-assisted step off: neither neighbour moves nor pre-screening.
    kwargs = {**_hamp_kwargs(s), "local_search": dataclasses.replace(s.local_search, max_moves=0,
                                                                     offspring_pool=1)}
    return HAMP(**{**kwargs, **overrides})


def _hamp_no_portfolio(s: SearchSettings, **overrides: Any) -> Algorithm:
    return HAMP(**{**_hamp_kwargs(s), "portfolio": ("nsga2",), **overrides})


def _nsga2(s: SearchSettings, **overrides: Any) -> Algorithm:
    return NSGA2Search(**{"pop_size": s.pop_size, **overrides})


def _random(s: SearchSettings, **overrides: Any) -> Algorithm:
    return RandomSearch(**{"pop_size": s.pop_size, **overrides})


#: Search name -> factory: the only list of generational searches (the config's ``method``
#: choices for the generational driver are read from it).
ALGORITHMS: dict[str, AlgorithmFactory] = {
    "hamp": _hamp,
    "nsga2": _nsga2,
    "random": _random,
    "hamp-no-ls": _hamp_no_ls,
    "hamp-no-portfolio": _hamp_no_portfolio,
}


def register_algorithm(name: str, factory: AlgorithmFactory) -> AlgorithmFactory:
    """Add a generational search under ``name`` (once)."""
    if name in ALGORITHMS and ALGORITHMS[name] is not factory:
        raise ValueError(f"search algorithm {name!r} is already registered")
    ALGORITHMS[name] = factory
    return factory


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
    return ALGORITHMS[method](settings or SearchSettings(), **overrides)
