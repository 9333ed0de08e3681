"""The archive's front and pymoo's result population, kept up to date tell by tell."""

from __future__ import annotations

import numpy as np
from pymoo.core.population import Population
from pymoo.termination.max_eval import MaximumFunctionCallTermination

from prunesearch.search.indicators import hv_contributions, non_dominated
from prunesearch.search.problems import SyntheticPruningProblem
from prunesearch.search.registry import make_algorithm
from prunesearch.search.settings import SearchSettings


def _full_front(algorithm) -> np.ndarray:
    feasible = np.flatnonzero(algorithm.archive_feasible)
    return np.sort(feasible[non_dominated(algorithm.archive_F[feasible])])


def test_front_and_result_follow_every_tell_as_a_full_recomputation_would() -> None:
    # The front is updated from the rows told since the last call and pymoo's ``opt`` reuses
    # the Individuals of members that stay: both must equal what the whole archive gives,
    # failed candidates and small groups included.
    problem = SyntheticPruningProblem()
    algorithm = make_algorithm("nsga2", SearchSettings(pop_size=8, budget=200))
    algorithm.setup(problem, termination=MaximumFunctionCallTermination(200), seed=1)
    rng = np.random.default_rng(0)
    while algorithm.has_next():
        pop = algorithm.ask()
        algorithm.evaluator.eval(problem, pop)
        for i in np.flatnonzero(rng.random(len(pop)) < 0.1):
            pop[int(i)].set("failed", True)
        for part in np.array_split(np.arange(len(pop)), 3):
            if len(part) == 0:
                continue
            algorithm.tell(infills=Population.create(*[pop[int(k)] for k in part]))
            front = algorithm.front_indices()
            assert np.array_equal(front, _full_front(algorithm))
            opt = algorithm.opt
            assert np.array_equal(opt.get("X"), algorithm.archive_X[front].astype(int))
            assert np.array_equal(opt.get("F"), algorithm.archive_F[front])
            if not algorithm.has_next():
                break
    assert algorithm.n_real_evals >= 150 and len(algorithm.front_indices()) > 5


def test_hv_contributions_of_chosen_rows_equal_the_full_computation() -> None:
    rng = np.random.default_rng(3)
    F = rng.random((40, 3))
    F = F[non_dominated(F)]
    full = hv_contributions(F, ref=[1.1, 1.1, 1.1])
    rows = [0, 3, len(F) - 1]
    some = hv_contributions(F, ref=[1.1, 1.1, 1.1], rows=rows)
    assert np.array_equal(some[rows], full[rows]) and full[rows].min() > 0
    assert np.all(np.delete(some, rows) == 0.0)
