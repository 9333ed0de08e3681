"""Device budgets as limits on cheap objectives: genomes beyond them are repaired, never asked."""

from __future__ import annotations

import numpy as np
import pytest
from pymoo.core.population import Population
from pymoo.optimize import minimize
from pymoo.termination.max_eval import MaximumFunctionCallTermination

from prunesearch.search import GenomeProblem, SyntheticPruningProblem, make_algorithm
from prunesearch.search.indicators import hypervolume
from prunesearch.search.problems import synthetic_hv_ref
from prunesearch.search.settings import ConfigError, SearchSettings, build_section
from prunesearch.search.steady_state import SteadyState

REF = synthetic_hv_ref()
LIMIT = 0.4 * float(REF[1])  # 40% of the full-width latency


def test_repair_shrinks_only_over_limit_genomes_uniformly_to_fit() -> None:
    problem = SyntheticPruningProblem(limits={1: LIMIT})
    lower, upper = problem.xl.astype(int), problem.xu.astype(int)
    narrow = lower + (upper - lower) // 4
    X = np.stack([upper, narrow, lower + (upper - lower) // 2])
    assert list(problem.within_limits(X)) == [False, True, False]
    R = problem.repair_limits(X)
    assert problem.within_limits(R).all()
    assert (R[1] == narrow).all()  # within the limit: unchanged
    for asked, repaired in ((X[0], R[0]), (X[2], R[2])):
        assert (repaired <= asked).all() and (repaired >= lower).all()
        # All widths shrink together: repaired = lower + floor(t * (asked - lower)) for one t.
        span = asked - lower
        t = max((repaired - lower)[span > 0] / span[span > 0])
        assert (repaired == lower + np.floor(t * span + 1e-9).astype(int)).all()
        # ... and no more than needed: the repaired genome's latency is near the limit.
        latency = problem.evaluate_cheap(repaired[None])[0, 0]
        assert 0.9 * LIMIT <= latency <= LIMIT
    assert (problem.repair_limits(X) == R).all()  # deterministic


def test_spread_repair_moves_half_of_the_repaired_genomes_inwards_reproducibly() -> None:
    problem = SyntheticPruningProblem(limits={1: LIMIT})  # limit_repair="spread", the default
    X = np.random.default_rng(0).integers(problem.xl, problem.xu + 1, size=(200, problem.n_var))
    X = X[~problem.within_limits(X)]
    boundary = problem.repair_limits(X)  # no rng: onto the limit
    spread = problem.repair_limits(X, rng=np.random.default_rng(7))
    assert (spread == problem.repair_limits(X, rng=np.random.default_rng(7))).all()
    assert problem.within_limits(spread).all() and (spread <= boundary).all()
    latency = problem.evaluate_cheap(spread)[:, 0]
    inwards = np.any(spread != boundary, axis=1)
    assert 0.3 < inwards.mean() < 0.7  # about SPREAD_SHARE of them
    assert latency[~inwards].min() >= 0.8 * LIMIT  # the others land on the limit
    assert latency[inwards].mean() < latency[~inwards].mean() - 0.1 * LIMIT
    on_limit = SyntheticPruningProblem(limits={1: LIMIT}, limit_repair="boundary")
    assert (on_limit.repair_limits(X, rng=np.random.default_rng(7)) == boundary).all()


def test_spread_repair_never_breaks_a_limit_that_does_not_rise_with_every_width() -> None:
    # A measured table need not be monotone: here widths 2-3 of gene 0 are slow.
    def cheap(X):
        X = np.asarray(X)
        latency = X.sum(axis=1) + 30.0 * np.isin(X[:, 0], (2, 3))
        return np.stack([latency, X.sum(axis=1).astype(float)], axis=1)

    problem = GenomeProblem([1] * 4, [12] * 4, cheap_objectives=(1, 2), cheap_fn=cheap,
                            limits={1: 25.0})
    X = np.random.default_rng(1).integers(8, 13, size=(300, 4))
    boundary = problem.repair_limits(X)
    spread = problem.repair_limits(X, rng=np.random.default_rng(2))
    assert problem.within_limits(spread).all()
    # Some inner points fell into the slow band and kept their boundary point instead.
    fallen = np.isin((1 + np.floor(0.4 * (X[:, 0] - 1))).astype(int), (2, 3))
    assert fallen.any() and (spread != boundary).any()


def test_a_limit_below_the_narrowest_genome_is_refused_with_the_floor() -> None:
    floor = float(SyntheticPruningProblem().evaluate_cheap(SyntheticPruningProblem().xl[None])[0, 0])
    with pytest.raises(ValueError, match=r"below .*narrowest genome"):
        SyntheticPruningProblem(limits={1: 0.5 * floor})
    with pytest.raises(ValueError, match="not cheap objectives"):
        GenomeProblem([1, 1], [4, 4], cheap_objectives=(1, 2),
                      cheap_fn=lambda X: np.ones((len(X), 2)), limits={0: 1.0})


def test_search_budget_keys_are_validated() -> None:
    settings = build_section(SearchSettings, {"max_latency_ms": 2.5}, prefix="search")
    assert settings.limits() == {1: 2.5}
    assert build_section(SearchSettings, {}, prefix="search").limits() == {}
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match="max_latency_ms"):
            build_section(SearchSettings, {"max_latency_ms": bad}, prefix="search")
    with pytest.raises(ConfigError, match="max_memory_mb"):
        build_section(SearchSettings, {"max_memory_mb": 0.0}, prefix="search")


@pytest.mark.parametrize("method", ["hamp", "nsga2", "random"])
def test_every_algorithm_evaluates_only_genomes_within_the_limit(method: str) -> None:
    problem = SyntheticPruningProblem(limits={1: LIMIT})
    result = minimize(problem, make_algorithm(method, SearchSettings(pop_size=12)),
                      ("n_evals", 60), seed=2)
    algorithm = result.algorithm
    X = algorithm.archive_X.astype(int)
    assert len(X) == 60  # the whole budget is spent
    assert problem.within_limits(X).all()
    assert len({tuple(x) for x in X}) == len(X)  # a repaired genome is never evaluated twice
    assert (result.F[:, 1] <= LIMIT).all() and len(result.F)
    # Seeds that the repair maps onto one genome are replaced: the initial batch stays full.
    first = algorithm.archive_generation == algorithm.archive_generation.min()
    assert first.sum() == 12


def test_asynchronous_asks_and_fillers_stay_within_the_limit() -> None:
    problem = SyntheticPruningProblem(limits={1: LIMIT})
    algorithm = make_algorithm("hamp", SearchSettings(pop_size=8))
    algorithm.setup(problem, termination=MaximumFunctionCallTermination(40), seed=0)
    # Random fillers (not neighbour moves of held results): most of them start over the limit.
    steady = SteadyState(algorithm, ask_size=3, bred_fillers=False)
    fillers = []
    real_random = steady._random
    steady._random = lambda n: fillers.append(n) or real_random(n)
    asked, in_flight = [], []
    while len(asked) < 40:
        # As the async loop does with 6 evaluators: keep 6 (+ the queue margin) asked, each
        # ask up to the budget left; tell the oldest result alone.
        while (len(in_flight) < 6 + steady.queue_extra
               and len(asked) + len(in_flight) < 40):
            pop = steady.ask(40 - len(asked) - len(in_flight),
                             exclude=set(asked) | {tuple(int(v) for v in p.X)
                                                   for p in in_flight})
            assert len(pop), "the algorithm ran dry"
            in_flight.extend(pop)
        ind = in_flight.pop(0)
        ind.F = problem.evaluate(np.atleast_2d(ind.X), return_values_of=["F"])[0]
        asked.append(tuple(int(v) for v in ind.X))
        steady.tell(Population.create(ind))
    steady.flush()
    assert len(fillers) >= 3  # free evaluators got fillers while the initial 8 were told
    assert algorithm.is_initialized
    assert problem.within_limits(np.array(asked)).all()
    assert len(set(asked)) == len(asked) == 40


def _hv_within_limit(F: np.ndarray) -> float:
    F = F[F[:, 1] <= LIMIT]
    if not len(F):
        return 0.0
    return float(hypervolume(F / np.array([REF[0], LIMIT, REF[2]]), np.ones(3)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_limited_search_finds_a_better_front_within_the_budget(seed: int) -> None:
    # NSGA-II at 200 evaluations: unconstrained, most of its front lies beyond 40% latency.
    fronts = {}
    for limits in (None, {1: LIMIT}):
        result = minimize(SyntheticPruningProblem(limits=limits),
                          make_algorithm("nsga2", SearchSettings(pop_size=20)),
                          ("n_evals", 200), seed=seed)
        fronts[limits is None] = _hv_within_limit(result.F)
    assert fronts[False] > 1.5 * fronts[True]
