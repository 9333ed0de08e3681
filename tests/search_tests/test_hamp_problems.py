"""HAMP on pymoo problems beyond the plain bounded vector: constraints (the optional feasibility
classifier, ``feasibility_threshold``) and the problems it refuses, with the reason."""

from __future__ import annotations

import numpy as np
import pytest
from pymoo.optimize import minimize
from pymoo.problems import get_problem

from prunesearch.search import HAMP


def _run(problem, seed=0, **options):
    return minimize(problem, HAMP(pop_size=12, **options), ("n_evals", 120), seed=seed)


def test_classifier_rules_out_predicted_infeasible_candidates_reproducibly():
    problem = get_problem("osy")
    first = _run(problem, feasibility_threshold=0.5)
    ruled_out = [h.get("predicted_infeasible", 0) for h in first.algorithm.history_log]
    assert sum(ruled_out) > 0
    again = _run(problem, feasibility_threshold=0.5)
    assert np.array_equal(first.algorithm.archive_X, again.algorithm.archive_X)
    off = _run(problem)
    assert not any("predicted_infeasible" in h for h in off.algorithm.history_log)
    assert not np.array_equal(first.algorithm.archive_X, off.algorithm.archive_X)


def test_no_effect_without_constraints_and_bad_values_refused():
    problem = get_problem("zdt1", n_var=6)
    a, b = _run(problem), _run(problem, feasibility_threshold=0.5)
    assert np.array_equal(a.algorithm.archive_X, b.algorithm.archive_X)
    for bad in (0.0, 1.0, -0.2):
        with pytest.raises(ValueError, match="feasibility_threshold"):
            HAMP(feasibility_threshold=bad)


def test_problems_hamp_cannot_search_are_refused_with_the_reason():
    from pymoo.core.problem import ElementwiseProblem, Problem
    from pymoo.core.variable import Choice, Real

    class Mixed(ElementwiseProblem):
        def __init__(self) -> None:
            super().__init__(vars={"a": Real(bounds=(0, 1)), "c": Choice(options=["x", "y"])},
                             n_obj=2)

        def _evaluate(self, x, out, *args, **kwargs):
            out["F"] = [x["a"], 1 - x["a"] + (x["c"] == "x")]

    class Unbounded(Problem):
        def __init__(self) -> None:
            super().__init__(n_var=2, n_obj=2)

        def _evaluate(self, X, out, *args, **kwargs):
            out["F"] = np.c_[X[:, 0] ** 2, (X[:, 0] - 1) ** 2]

    with pytest.raises(ValueError, match="mixed variables"):
        minimize(Mixed(), HAMP(), ("n_evals", 20), seed=0)
    with pytest.raises(ValueError, match="bounded variables"):
        minimize(Unbounded(), HAMP(), ("n_evals", 20), seed=0)
    with pytest.raises(ValueError, match="multi-objective"):
        minimize(get_problem("sphere", n_var=3), HAMP(), ("n_evals", 20), seed=0)
