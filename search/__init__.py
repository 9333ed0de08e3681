"""prunesearch.search: multi-objective search (pymoo). Never imports torch or Ray."""

if __name__ != "prunesearch.search":
    raise ImportError(
        "the 'search' folder is part of the prunesearch distribution and must be imported as "
        "'prunesearch.search' (install it with: pip install -e . ; then: import prunesearch.search)"
    )

from prunesearch.search.indicators import (  # noqa: E402
    hypervolume,
    non_dominated,
    normalized_hypervolume,
)
from prunesearch.search.problems import GenomeProblem, SyntheticPruningProblem  # noqa: E402
from prunesearch.search.registry import ALGORITHMS, make_algorithm  # noqa: E402
from prunesearch.search.settings import ConfigError, SearchSettings  # noqa: E402

__all__ = [
    "ALGORITHMS",
    "ConfigError",
    "GenomeProblem",
    "SearchSettings",
    "SyntheticPruningProblem",
    "hypervolume",
    "make_algorithm",
    "non_dominated",
    "normalized_hypervolume",
]
