"""HAMP end to end on small budgets: minimize, ask/tell, determinism, checkpoints, failures."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from pymoo.optimize import minimize
from pymoo.problems import get_problem

from prunesearch.search import (
    HAMP,
    GenomeProblem,
    LocalSearchSettings,
    SyntheticPruningProblem,
    benchmark_problem,
    mark_failed,
)
from prunesearch.search.indicators import hypervolume, non_dominated

SMALL_LS = LocalSearchSettings(parents=5, samples_per_parent=60, moves_per_parent=2, max_moves=6)


def small_hamp(**kwargs) -> HAMP:
    return HAMP(pop_size=20, local_search=SMALL_LS, surrogate_options={"n_trees": 20}, **kwargs)


def drive(algorithm: HAMP, problem, *, fail=None, stop_after: int | None = None) -> HAMP:
    """Hand-driven ask/tell loop, evaluating with ``problem``; ``fail(X) -> mask``."""
    tells = 0
    while algorithm.has_next():
        pop = algorithm.ask()
        X = pop.get("X")
        F = problem.evaluate(X, return_values_of=["F"])
        if fail is not None:
            bad = fail(X)
            F[bad] = np.nan
            pop.set("F", F)
            mark_failed(pop, bad)
        else:
            pop.set("F", F)
        algorithm.tell(infills=pop)
        tells += 1
        if stop_after is not None and tells == stop_after:
            break
    return algorithm


@pytest.mark.parametrize("problem", [get_problem("zdt1"), SyntheticPruningProblem()],
                         ids=["zdt1", "synthetic"])
def test_minimize_spends_exactly_the_budget_and_returns_the_archive_front(problem):
    res = minimize(problem, small_hamp(), ("n_evals", 150), seed=1)
    algo = res.algorithm
    assert algo.n_real_evals == 150 == len(algo.archive_F)
    assert res.F is not None and len(res.F) >= 2
    # The result is exactly the archive's non-dominated set.
    front = algo.archive_F[non_dominated(algo.archive_F)]
    assert sorted(map(tuple, res.F)) == sorted(map(tuple, front))
    if problem.vtype is int:
        assert np.issubdtype(res.X.dtype, np.integer)
        assert np.all(res.X >= problem.xl) and np.all(res.X <= problem.xu)
    # No genome is ever evaluated twice.
    assert len(np.unique(algo.archive_X, axis=0)) == len(algo.archive_X)


def test_front_improves_over_generations():
    problem = SyntheticPruningProblem()
    res = minimize(problem, small_hamp(initial_keep_ratios=()), ("n_evals", 300), seed=2)
    hv = [h["hv"] for h in res.algorithm.history_log]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(hv))  # the archive front never loses HV
    assert hv[-1] > hv[0] * 1.05
    assert hypervolume(res.F / problem.hv_ref, np.ones(3)) == pytest.approx(hv[-1])


def test_same_seed_same_front_different_seed_different_front():
    problem = SyntheticPruningProblem()
    runs = [minimize(problem, small_hamp(), ("n_evals", 120), seed=s) for s in (5, 5, 6)]
    assert np.array_equal(runs[0].algorithm.archive_X, runs[1].algorithm.archive_X)
    assert np.array_equal(runs[0].F, runs[1].F)
    assert not np.array_equal(runs[0].algorithm.archive_X, runs[2].algorithm.archive_X)


def test_pickled_mid_run_continues_exactly_like_the_uninterrupted_run():
    problem = SyntheticPruningProblem()
    full = small_hamp()
    full.setup(problem, termination=("n_evals", 200), seed=11)
    drive(full, problem)

    first = small_hamp()
    first.setup(problem, termination=("n_evals", 200), seed=11)
    drive(first, problem, stop_after=3)  # after the initial batch and two generations
    assert first.has_next()
    resumed = pickle.loads(pickle.dumps(first))
    drive(resumed, problem)

    assert resumed.n_real_evals == full.n_real_evals == 200
    assert np.array_equal(resumed.archive_X, full.archive_X)
    assert np.array_equal(resumed.archive_F, full.archive_F)
    assert [h["operator"] for h in resumed.history_log] == [h["operator"] for h in full.history_log]
    assert np.array_equal(resumed.result().F, full.result().F)


def test_ask_never_exceeds_the_remaining_budget_in_a_hand_driven_loop():
    problem = SyntheticPruningProblem()
    algo = small_hamp()
    algo.setup(problem, termination=("n_evals", 57), seed=0)
    sizes = []
    while algo.has_next():
        pop = algo.ask()
        sizes.append(len(pop))
        pop.set("F", problem.evaluate(pop.get("X"), return_values_of=["F"]))
        algo.tell(infills=pop)
    assert sum(sizes) == 57 and sizes[0] == 20 and max(sizes) <= 26
    assert algo.evaluator.n_eval == 57  # pymoo's own termination saw the evaluations too
    assert not algo.has_next()


def test_portfolio_choices_are_recorded_and_every_operator_is_used():
    res = minimize(SyntheticPruningProblem(), small_hamp(), ("n_evals", 500), seed=3)
    algo = res.algorithm
    log = algo.history_log[1:]
    assert {h["operator"] for h in log} == {"nsga2", "sms-emoa", "spea2", "ibea"}
    for h in log:
        assert set(h["probabilities"]) == {"nsga2", "sms-emoa", "spea2", "ibea"}
        assert sum(h["probabilities"].values()) == pytest.approx(1.0)
        assert min(h["probabilities"].values()) >= 0.05 - 1e-12
    # Credit goes to the operator chosen one generation earlier.
    for prev, h in itertools.pairwise(log):
        assert h["rewarded"] == prev["operator"]
        assert h["credit"] == pytest.approx(h["hv"] - h["hv_before"])
    assert algo.last_operator == log[-1]["operator"]


class CountingProblem(GenomeProblem):
    """Error is expensive; latency/memory are cheap and their calls are counted."""

    def __init__(self):
        base = SyntheticPruningProblem()
        self.cheap_calls = 0
        self.cheap_rows = 0
        self._base = base
        super().__init__(base.xl, base.xu, n_obj=3, cheap_objectives=(1, 2),
                         cheap_fn=self._count, expensive_fn=base._errors, hv_ref=base.hv_ref)

    def _count(self, X):
        self.cheap_calls += 1
        self.cheap_rows += len(X)
        return self._base.evaluate_cheap(X)


def test_local_search_computes_cheap_objectives_exactly():
    problem = CountingProblem()
    algo = small_hamp()
    algo.setup(problem, termination=("n_evals", 120), seed=4)
    checked = 0
    while algo.has_next():
        calls_before = problem.cheap_calls
        pop = algo.ask()
        moves = [ind for ind in pop if ind.get("origin") == "local_search"]
        if moves:
            assert problem.cheap_calls > calls_before  # ranking used the exact cheap objectives
        for ind in moves:
            exact = problem._base.evaluate_cheap(ind.X[None, :])[0]
            assert np.array_equal(ind.get("predicted_F")[1:], exact)
            checked += 1
        pop.set("F", problem.evaluate(pop.get("X"), return_values_of=["F"]))
        algo.tell(infills=pop)
    assert checked >= 6


def test_failed_candidates_are_archived_but_never_selected_or_returned():
    problem = SyntheticPruningProblem()

    def fail(X):  # genomes with a wide first block "crash"
        return np.asarray(X)[:, 0] >= 12

    algo = small_hamp()
    algo.setup(problem, termination=("n_evals", 200), seed=7)
    selected_failed = []
    while algo.has_next():
        drive(algo, problem, fail=fail, stop_after=1)
        selected_failed.append(any(ind.get("failed") for ind in algo.pop))
    assert algo.archive_failed.any() and not any(selected_failed)
    res = algo.result()
    assert not np.any(fail(res.X))
    # A failed genome is never proposed again.
    assert len(np.unique(algo.archive_X, axis=0)) == len(algo.archive_X)


def test_nan_objectives_count_as_failures_on_a_plain_problem():
    problem = get_problem("zdt2")
    algo = small_hamp()
    algo.setup(problem, termination=("n_evals", 80), seed=1)
    drive(algo, problem, fail=lambda X: np.asarray(X)[:, 0] > 0.5)
    assert algo.archive_failed.sum() > 0
    assert np.all(algo.result().X[:, 0] <= 0.5)


def test_gaussian_process_surrogate_runs_with_expected_improvement():
    res = minimize(get_problem("zdt1", n_var=6), HAMP(pop_size=12, surrogate="gaussian_process",
                   local_search=SMALL_LS), ("n_evals", 60), seed=0)
    assert res.algorithm.n_real_evals == 60
    assert any(h.get("ls_moves") for h in res.algorithm.history_log)


@pytest.mark.parametrize("kwargs, word", [
    ({"pop_size": 2}, "pop_size"),
    ({"surrogate": "svm"}, "surrogate"),
    ({"portfolio": ("nsga2", "moead")}, "moead"),
    ({"min_probability": 0.3}, "min_probability"),
    ({"initial_keep_ratios": (1.5,)}, "initial_keep_ratios"),
])
def test_invalid_arguments_are_refused_by_name(kwargs, word):
    with pytest.raises(ValueError, match=word):
        HAMP(**kwargs)


def test_pruning_genomes_start_from_the_full_width_and_uniform_keep_ratios():
    problem = SyntheticPruningProblem()
    algo = small_hamp()
    algo.setup(problem, termination=("n_evals", 40), seed=0)
    X = algo.ask().get("X")
    assert any(np.array_equal(x, problem.xu) for x in X)  # the dense network
    half = np.rint(problem.xl + 0.5 * (problem.xu - problem.xl))
    assert any(np.array_equal(x, half) for x in X)
    # Generic integer problems are not seeded unless asked to.
    zdt = benchmark_problem("zdt1-int")
    for ratios, expected in ((None, False), ((1.0,), True)):
        algo = small_hamp(initial_keep_ratios=ratios)
        algo.setup(zdt, termination=("n_evals", 40), seed=0)
        X = algo.ask().get("X")
        assert any(np.array_equal(x, zdt.xu) for x in X) == expected


def test_adaptive_local_search_budget_follows_its_contribution():
    algo = small_hamp()
    algo.setup(SyntheticPruningProblem(), termination=("n_evals", 100), seed=0)
    cap = SMALL_LS.max_moves
    assert algo._moves_budget() == cap  # nothing known yet
    algo.origin_credits = {"variation": [0.02, 0.02], "local_search": [0.005, 0.005]}
    assert algo._moves_budget() == round(cap * 0.25)
    algo.origin_credits = {"variation": [0.02], "local_search": [0.0]}
    assert algo._moves_budget() == 2  # never starved: it keeps sampling its worth
    algo.origin_credits = {"variation": [0.01], "local_search": [0.05]}
    assert algo._moves_budget() == cap
    fixed = small_hamp(adaptive_local_search=False)
    fixed.setup(SyntheticPruningProblem(), termination=("n_evals", 100), seed=0)
    fixed.origin_credits = {"variation": [0.02], "local_search": [0.0]}
    assert fixed._moves_budget() == cap


def test_origin_credits_are_recorded_during_a_run():
    res = minimize(SyntheticPruningProblem(), small_hamp(), ("n_evals", 200), seed=1)
    algo = res.algorithm
    assert algo.origin_credits["local_search"] and algo.origin_credits["variation"]
    assert set(algo.archive_origin) == {"initial", "variation", "local_search"}
    assert all(0 < h["ls_budget"] <= SMALL_LS.max_moves for h in algo.history_log if "ls_budget" in h)
