"""prunesearch.search: multi-objective search (pymoo). Never imports torch or Ray.

Public names are loaded lazily (PEP 562), so that ``prunesearch.search.settings`` and
``prunesearch.search.synthetic`` can be imported without pymoo: ``prunesearch.methods`` uses them
on GPU machines that have no pymoo installed.
"""

from __future__ import annotations

import importlib
from typing import Any

if __name__ != "prunesearch.search":
    raise ImportError(
        "the 'search' folder is part of the prunesearch distribution and must be imported as "
        "'prunesearch.search' (install it with: pip install -e . ; then: import prunesearch.search)"
    )

#: public name -> defining module (relative to this package)
_EXPORTS = {
    "ALGORITHMS": "registry",
    "make_algorithm": "registry",
    "HAMP": "hamp",
    "NSGA2Search": "baselines",
    "RandomSearch": "baselines",
    "ArchivedSearch": "base",
    "FAILED_OBJECTIVE": "base",
    "mark_failed": "base",
    "Portfolio": "selection",
    "GenomeProblem": "problems",
    "SyntheticPruningProblem": "problems",
    "DiscretizedProblem": "problems",
    "BENCHMARK_PROBLEMS": "problems",
    "benchmark_problem": "problems",
    "comparison_hypervolumes": "indicators",
    "hypervolume": "indicators",
    "non_dominated": "indicators",
    "normalized_hypervolume": "indicators",
    "ConfigError": "errors",
    "PrunesearchError": "errors",
    "SearchSettings": "settings",
    "LocalSearchSettings": "settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prunesearch.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"prunesearch.search.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
