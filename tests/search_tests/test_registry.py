"""The method registry: every name builds a working algorithm, unknown names are refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pymoo.optimize import minimize

from prunesearch.search import (
    ALGORITHMS,
    HAMP,
    NSGA2Search,
    RandomSearch,
    SearchSettings,
    SyntheticPruningProblem,
    benchmark_problem,
    make_algorithm,
    mark_failed,
)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown search method 'moead'.*hamp.*nsga2.*random"):
        make_algorithm("moead")


def test_registry_builds_the_documented_algorithms():
    assert isinstance(make_algorithm("hamp"), HAMP)
    assert isinstance(make_algorithm("nsga2"), NSGA2Search)
    assert isinstance(make_algorithm("random"), RandomSearch)
    assert make_algorithm("hamp-no-ls").local_search.max_moves == 0
    assert make_algorithm("hamp-no-ls").local_search.offspring_pool == 1  # no surrogate at all
    assert make_algorithm("hamp-no-portfolio").portfolio.names == ("nsga2",)
    assert make_algorithm("hamp", pop_size=12).pop_size == 12


def test_hamp_defaults_are_the_search_settings_defaults():
    # HAMP() is the tuned default; a config without a search section must build the same thing.
    a, b = HAMP(), make_algorithm("hamp", SearchSettings())
    s = SearchSettings()
    for algo in (a, b):
        assert algo.pop_size == s.pop_size
        assert algo.portfolio.names == s.portfolio
        assert algo.portfolio.window == s.credit_window
        assert algo.portfolio.min_probability == s.min_probability
        assert algo.local_search == s.local_search
        assert algo.surrogate_name == s.surrogate
    assert a.initial_keep_ratios == b.initial_keep_ratios


def test_settings_reach_the_algorithm():
    ls = dataclasses.replace(SearchSettings().local_search, parents=3, max_moves=4)
    s = dataclasses.replace(SearchSettings(), pop_size=16, portfolio=("ibea", "spea2"),
                            local_search=ls, surrogate="gaussian_process")
    algo = make_algorithm("hamp", s)
    assert (algo.pop_size, algo.portfolio.names) == (16, ("ibea", "spea2"))
    assert algo.local_search.parents == 3 and algo.surrogate_name == "gaussian_process"
    assert make_algorithm("nsga2", s).pop_size == 16


@pytest.mark.parametrize("method", ALGORITHMS)
def test_every_method_runs_on_integer_and_real_problems(method):
    for name in ("synthetic", "zdt3"):
        problem = benchmark_problem(name)
        overrides = {"surrogate_options": {"n_trees": 10}} if method.startswith("hamp") else {}
        algo = make_algorithm(method, pop_size=16, **overrides)
        res = minimize(problem, algo, ("n_evals", 60), seed=0)
        assert res.algorithm.n_real_evals == 60
        assert len(res.F) >= 1
        assert isinstance(res.algorithm.last_operator, str)
        if name == "synthetic":
            assert np.issubdtype(res.X.dtype, np.integer)


@pytest.mark.parametrize("method", ["nsga2", "random"])
def test_baselines_are_deterministic_and_beat_nothing_by_accident(method):
    problem = SyntheticPruningProblem()
    a = minimize(problem, make_algorithm(method), ("n_evals", 100), seed=1)
    b = minimize(problem, make_algorithm(method), ("n_evals", 100), seed=1)
    assert np.array_equal(a.algorithm.archive_X, b.algorithm.archive_X)
    assert len(np.unique(a.algorithm.archive_X, axis=0)) == 100


@pytest.mark.parametrize("method", ALGORITHMS)
def test_every_method_honours_budget_and_failures_in_a_hand_driven_loop(method):
    problem = SyntheticPruningProblem()
    overrides = {"surrogate_options": {"n_trees": 10}} if method.startswith("hamp") else {}
    algo = make_algorithm(method, pop_size=16, **overrides)
    algo.setup(problem, termination=("n_evals", 57), seed=2)
    while algo.has_next():
        pop = algo.ask()
        assert len(pop) <= algo.remaining_budget
        X = pop.get("X")
        F = problem.evaluate(X, return_values_of=["F"])
        bad = X[:, 1] <= 4
        F[bad] = np.nan
        pop.set("F", F)
        mark_failed(pop, bad)
        algo.tell(infills=pop)
    assert algo.n_real_evals == 57 and algo.archive_failed.any()
    res = algo.result()
    assert len(res.X) and np.all(res.X[:, 1] > 4)
    assert not any(ind.get("failed") for ind in algo.pop)
