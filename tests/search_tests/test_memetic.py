"""HAMP's surrogate-assisted step: offspring pre-screening, the rank-correlation gate, the
held-out rank correlation of the forest, and the pruning-like benchmark problems."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from pymoo.core.population import Population
from pymoo.optimize import minimize

from prunesearch.search import HAMP, LocalSearchSettings
from prunesearch.search.pruning_like import PRUNING_LIKE, pruning_like_problem
from prunesearch.search.surrogate import RandomForestSurrogate

LS = LocalSearchSettings(parents=4, samples_per_parent=40, moves_per_parent=1, max_moves=4,
                         offspring_pool=4, explore_fraction=0.25)


def hamp(**kwargs) -> HAMP:
    kwargs.setdefault("local_search", LS)
    return HAMP(pop_size=12, surrogate_options={"n_trees": 20}, **kwargs)


def drive(algorithm: HAMP, problem, *, stop_after: int | None = None) -> list[Population]:
    batches, tells = [], 0
    while algorithm.has_next():
        pop = algorithm.ask()
        batches.append(pop)
        pop.set("F", problem.evaluate(pop.get("X"), return_values_of=["F"]))
        algorithm.tell(infills=pop)
        tells += 1
        if stop_after is not None and tells == stop_after:
            break
    return batches


@pytest.fixture(scope="module")
def problem():
    return pruning_like_problem("pl-r38-2obj", 0)


def test_prescreened_batches_have_the_offspring_count_and_no_known_genome(problem):
    algo = hamp()
    algo.setup(problem, termination=("n_evals", 120), seed=3)
    batches = drive(algo, problem)
    assert sum(len(b) for b in batches) == 120 == len(algo.archive_X)
    assert len(np.unique(algo.archive_X, axis=0)) == len(algo.archive_X)
    screened = [h for h in algo.history_log if h.get("pool")]
    assert screened, "the surrogate never pre-screened"
    for h in screened:
        # A pool several times the batch was bred, and the batch kept its usual size.
        assert h["pool"] > algo.n_offsprings
    for batch in batches[1:-1]:
        origins = list(batch.get("origin"))
        assert origins.count("variation") == algo.n_offsprings
        assert origins.count("local_search") <= LS.max_moves


def test_prescreening_keeps_the_predicted_best_and_a_random_share():
    problem = pruning_like_problem("pl-r38-2obj", 1)
    algo = hamp(local_search=LocalSearchSettings(offspring_pool=4, explore_fraction=0.25))
    algo.setup(problem, termination=("n_evals", 200), seed=0)
    drive(algo, problem, stop_after=2)
    rng = np.random.default_rng(0)
    X = rng.integers(problem.xl, problem.xu + 1, size=(48, problem.n_var))
    good = np.arange(0, 48, 5)  # rows the fake surrogate says are far better than the front

    def predictor(C):
        F = np.ones((len(C), 2)) * 10.0
        F[good, 0] = -1.0 - np.arange(len(good)) * 1e-3
        F[good, 1] = -1.0 - np.arange(len(good))[::-1] * 1e-3
        return F, None

    algo.prescreen_credits.clear()  # no record of the pre-screening yet: its full share
    kept = algo._prescreen(Population.new(X=X), predictor).get("X")
    assert len(kept) == algo.n_offsprings == 12
    exploit = 12 - round(0.25 * 12)
    rows = [int(np.flatnonzero((X == x).all(axis=1))[0]) for x in kept]
    assert set(rows[:exploit]) <= set(good.tolist())  # the predicted best first
    assert len(set(rows)) == 12


def test_prescreen_share_follows_how_often_chosen_offspring_beat_random_ones(problem):
    algo = hamp()
    algo.setup(problem, termination=("n_evals", 200), seed=0)
    n, full = algo.n_offsprings, algo.n_offsprings - round(0.25 * algo.n_offsprings)
    shares = {}
    for record in ([], [0.5], [0.3, 0.4], [0.625], [0.75], [0.9, 1.0]):
        algo.prescreen_credits = list(record)
        shares[tuple(record)] = algo._prescreen_share(n)
    assert shares[()] == full == shares[(0.75,)] == shares[(0.9, 1.0)]
    assert shares[(0.5,)] == 1 == shares[(0.3, 0.4)]  # no better than chance: one probe
    assert 1 < shares[(0.625,)] < full
    fixed = hamp(adaptive_prescreen=False)
    fixed.setup(problem, termination=("n_evals", 200), seed=0)
    fixed.prescreen_credits = [0.0]
    assert fixed._prescreen_share(n) == full


def test_prescreen_record_scores_chosen_against_random_offspring(problem):
    algo = hamp()
    algo.setup(problem, termination=("n_evals", 240), seed=2)
    drive(algo, problem)
    credits = [h["prescreen_credit"] for h in algo.history_log
               if h.get("prescreen_credit") is not None]
    assert len(credits) >= 5 and all(0.0 <= c <= 1.0 for c in credits)
    # The forest ranks this problem well: its picks beat the random ones more often than not.
    assert np.mean(credits) > 0.55
    counts = [h["prescreened"] for h in algo.history_log if h.get("pool")]
    assert min(counts) >= 1 and max(counts) <= algo.n_offsprings - round(0.25 * algo.n_offsprings)


def test_steps_pause_while_the_last_batches_were_ranked_badly_and_resume(problem):
    algo = hamp()
    algo.setup(problem, termination=("n_evals", 400), seed=4)
    drive(algo, problem, stop_after=4)
    assert algo.batch_correlations and np.mean(algo.batch_correlations) > 0.8
    algo.batch_correlations = [0.1]  # as if the surrogate had just mis-ranked a batch
    pop = algo.ask()
    assert set(pop.get("origin")) == {"variation"} and len(pop) == algo.n_offsprings
    h_stats = algo._ls_stats
    assert h_stats["pool"] == 0 and h_stats["ls_moves"] == 0
    pop.set("F", problem.evaluate(pop.get("X"), return_values_of=["F"]))
    algo.tell(infills=pop)
    # The paused surrogate still predicted the batch: the check has a new, out-of-sample value.
    assert len(algo.batch_correlations) == 2 and algo.batch_correlations[-1] > 0.8
    algo.batch_correlations = [0.95]
    pop = algo.ask()
    assert "local_search" in set(pop.get("origin")) and algo._ls_stats["pool"] > 0


def test_a_surrogate_that_cannot_rank_is_not_used(problem):
    algo = hamp(local_search=LocalSearchSettings(parents=4, samples_per_parent=40,
                                                 max_moves=4, min_rank_correlation=1.0))
    res = minimize(problem, algo, ("n_evals", 100), seed=1)
    logs = res.algorithm.history_log[1:]
    assert all(h["rank_correlation"] is not None and h["rank_correlation"] < 1.0 for h in logs)
    assert not any(h["surrogate_used"] or h["ls_moves"] or h["pool"] for h in logs)
    assert "local_search" not in res.algorithm.archive_origin


def test_forest_reports_held_out_rank_correlation():
    rng = np.random.default_rng(0)
    X = rng.random((200, 6))
    y = X @ np.array([3.0, 2.0, 1.0, 0.5, 0.0, 0.0])
    model = RandomForestSurrogate(n_trees=50)
    model.fit(X, y[:, None], random_state=0)
    assert model.held_out_rank_correlation > 0.8
    model.fit(X, rng.random((200, 1)), random_state=0)
    assert abs(model.held_out_rank_correlation) < 0.3


def test_forest_fits_on_the_most_recent_points_and_caps_each_trees_draws():
    # The refit at every ask must not grow with the archive (issue 13): past ``max_points``
    # only the most recent evaluations are fitted, and each tree draws ``max_samples``.
    rng = np.random.default_rng(1)
    X = rng.random((400, 5))
    y = (X @ np.array([2.0, 1.0, 0.5, 0.0, 0.0]))[:, None]
    capped = RandomForestSurrogate(n_trees=20, max_points=150, max_samples=64)
    capped.fit(X, y, random_state=3)
    recent = RandomForestSurrogate(n_trees=20, max_points=None, max_samples=64)
    recent.fit(X[-150:], y[-150:], random_state=3)
    probe = rng.random((30, 5))
    assert np.array_equal(capped.predict(probe)[0], recent.predict(probe)[0])
    assert all(len(idx) == 64 for idx in capped._model.estimators_samples_)
    uncapped = RandomForestSurrogate(n_trees=20, max_points=None, max_samples=None)
    uncapped.fit(X, y, random_state=3)
    assert all(len(idx) == 400 for idx in uncapped._model.estimators_samples_)
    assert not np.array_equal(uncapped.predict(probe)[0], capped.predict(probe)[0])
    small = RandomForestSurrogate(n_trees=5, max_samples=512)  # below the cap: n draws
    small.fit(X[:100], y[:100], random_state=0)
    assert all(len(idx) == 100 for idx in small._model.estimators_samples_)
    for bad in (0, 7, 2.5, True):
        with pytest.raises(ValueError, match="max_points"):
            RandomForestSurrogate(max_points=bad)
        with pytest.raises(ValueError, match="max_samples"):
            RandomForestSurrogate(max_samples=bad)


def test_resume_with_prescreening_is_exact(problem):
    full = hamp()
    full.setup(problem, termination=("n_evals", 110), seed=7)
    drive(full, problem)
    first = hamp()
    first.setup(problem, termination=("n_evals", 110), seed=7)
    drive(first, problem, stop_after=4)
    resumed = pickle.loads(pickle.dumps(first))
    drive(resumed, problem)
    assert np.array_equal(resumed.archive_X, full.archive_X)
    assert np.array_equal(resumed.archive_F, full.archive_F)


@pytest.mark.parametrize("name", list(PRUNING_LIKE))
def test_pruning_like_problems_look_like_pruning(name):
    problem = pruning_like_problem(name, 5)
    assert 20 <= problem.n_var <= 60 and problem.n_obj == PRUNING_LIKE[name].n_obj
    dense = problem.xu[None, :].astype(int)
    half = np.maximum(1, problem.xu // 2)[None, :].astype(int)
    F_dense, F_half = problem.evaluate_full(dense)[0], problem.evaluate_full(half)[0]
    # Pruning costs error and saves latency (and memory); the dense network defines the box.
    assert F_half[0] > F_dense[0] + 0.02 and np.all(F_half[1:] < F_dense[1:])
    assert np.array_equal(problem.report_ref[1:], F_dense[1:])
    # Noise is a property of the genome: evaluating again repeats it; instances differ.
    assert np.array_equal(problem.evaluate_full(half), problem.evaluate_full(half))
    assert not np.allclose(pruning_like_problem(name, 6).evaluate_full(half), F_half)
    # Latency moves in hardware steps: one granule less inside a tile changes nothing.
    steps = problem.tile // 4
    x = problem.xu.astype(int).copy()
    x[0] = problem.xu[0] - 1  # 4 channels fewer on the first block
    same = problem.evaluate_cheap(x[None, :])[0, 0] == problem.evaluate_cheap(dense)[0, 0]
    assert steps > 1 and same
