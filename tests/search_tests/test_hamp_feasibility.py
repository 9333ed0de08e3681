"""HAMP's optional feasibility classifier on constrained problems (``feasibility_threshold``)."""

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
