"""Search algorithms by name (the config's ``method``).

PLACEHOLDER until issue 4 lands: every name builds pymoo's NSGA-II with integer operators.
The search helper replaces this with HAMP, its ablations and the baselines.
"""

from __future__ import annotations

from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling

from prunesearch.search.settings import SearchSettings

ALGORITHMS = ("hamp", "nsga2", "random", "hamp-no-ls", "hamp-no-portfolio")


def make_algorithm(method: str, settings: SearchSettings | None = None):
    """Build the pymoo algorithm for ``method`` from the ``search`` settings."""
    settings = settings or SearchSettings()
    if method not in ALGORITHMS:
        raise ValueError(f"unknown search method {method!r}; valid: {', '.join(ALGORITHMS)}")
    return NSGA2(
        pop_size=settings.pop_size,
        sampling=IntegerRandomSampling(),
        crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
        mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
