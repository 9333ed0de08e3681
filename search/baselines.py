"""Baselines with HAMP's interface: pymoo's NSGA-II and random search.

Both mix in :class:`~prunesearch.search.base.ArchivedSearch`, so they count real evaluations,
respect the budget in hand-driven ask/tell loops, handle failed candidates, never re-propose an
archived genome and return the archive's feasible non-dominated set, exactly like HAMP: a
comparison measures the search, not the bookkeeping.
"""

from __future__ import annotations

from typing import Any

from pymoo.algorithms.moo.nsga2 import NSGA2, binary_tournament
from pymoo.core.algorithm import Algorithm
from pymoo.core.initialization import Initialization
from pymoo.core.mating import Mating
from pymoo.core.population import Population
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import FloatRandomSampling, IntegerRandomSampling
from pymoo.operators.selection.tournament import TournamentSelection

from prunesearch.search.base import ArchivedSearch

__all__ = ["NSGA2Search", "RandomSearch"]


class NSGA2Search(ArchivedSearch, NSGA2):
    """pymoo's NSGA-II (SBX eta 15 p 0.9, PM eta 20), rounded operators on integer problems.

    Duplicates are eliminated against the whole archive (pymoo's default checks only the
    population), so no evaluation is spent twice on one genome.

    Args:
        pop_size: Population size (and offspring per generation).
        **kwargs: Passed to pymoo's ``NSGA2``.
    """

    operator_name = "nsga2"

    def __init__(self, *, pop_size: int = 50, **kwargs: Any) -> None:
        if pop_size < 2:
            raise ValueError(f"pop_size must be >= 2, got {pop_size!r}")
        kwargs.setdefault("output", None)
        super().__init__(pop_size=pop_size, **kwargs)

    def _setup(self, problem, **kwargs) -> None:
        self._init_archive(problem)
        if self.integer:
            self.sampling = IntegerRandomSampling()
            crossover = SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair())
            mutation = PM(eta=20, vtype=float, repair=RoundingRepair())
        else:
            self.sampling = FloatRandomSampling()
            crossover, mutation = SBX(prob=0.9, eta=15), PM(eta=20)
        self.eliminate_duplicates = self.known_genomes
        self.initialization = Initialization(self.sampling,
                                             eliminate_duplicates=self.known_genomes)
        self.mating = Mating(TournamentSelection(func_comp=binary_tournament), crossover,
                             mutation, eliminate_duplicates=self.known_genomes,
                             n_max_iterations=100)
        super()._setup(problem, **kwargs)

    def _infill(self) -> Population | None:
        if self.pop is None or len(self.pop) < 2:
            return self._random_unknown(self.n_offsprings)
        return super()._infill()

    def _advance(self, infills=None, **kwargs):
        out = super()._advance(infills=infills, **kwargs)
        self._log_generation()
        return out

    def _initialize_advance(self, infills=None, **kwargs):
        if infills is not None and len(infills):
            super()._initialize_advance(infills=infills, **kwargs)
        self._log_generation()


class RandomSearch(ArchivedSearch, Algorithm):
    """Uniform random search: each generation asks ``pop_size`` new random genomes.

    Args:
        pop_size: Genomes per batch.
        **kwargs: Passed to pymoo's ``Algorithm``.
    """

    operator_name = "random"

    def __init__(self, *, pop_size: int = 50, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if pop_size < 1:
            raise ValueError(f"pop_size must be >= 1, got {pop_size!r}")
        self.pop_size = pop_size

    def _setup(self, problem, **kwargs) -> None:
        self._init_archive(problem)
        self.sampling = IntegerRandomSampling() if self.integer else FloatRandomSampling()

    def _initialize_infill(self) -> Population:
        return self._random_unknown(self.pop_size)

    def _infill(self) -> Population | None:
        batch = self._random_unknown(self.pop_size)
        if len(batch) == 0:
            self.termination.force_termination = True
            return None
        return batch

    def _initialize_advance(self, infills=None, **kwargs) -> None:
        self._log_generation()

    def _advance(self, infills=None, **kwargs) -> None:
        self._log_generation()
