"""SteadyState: asynchronous ask/tell over the registry's algorithms (pure, no Ray)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from pymoo.termination.max_eval import MaximumFunctionCallTermination

from prunesearch.search.problems import SyntheticPruningProblem
from prunesearch.search.registry import make_algorithm
from prunesearch.search.settings import LocalSearchSettings, SearchSettings
from prunesearch.search.steady_state import SteadyState, default_ask_size

BUDGET = 40


def _run(method: str, order_seed: int, roundtrip: bool = False,
         **options: object) -> tuple[list[tuple[int, ...]], SteadyState]:
    """Ask/tell with results coming back in an order drawn from ``order_seed`` (``roundtrip``:
    the state is pickled and restored after every tell, as a resumed driver's would be)."""
    problem = SyntheticPruningProblem()
    settings = SearchSettings(pop_size=6, budget=BUDGET,
                              local_search=LocalSearchSettings(parents=2, samples_per_parent=20))
    algorithm = make_algorithm(method, settings)
    algorithm.setup(problem, termination=MaximumFunctionCallTermination(BUDGET), seed=3)
    steady = SteadyState(algorithm, ask_size=2, **options)
    rng = np.random.default_rng(order_seed)
    asked, pending, told = [], [], 0
    while told < BUDGET:
        while len(pending) < 8 and len(asked) < BUDGET:
            lean = steady.lean_initial and steady.initial_size is not None
            lean = lean and not steady.initialized
            pop = steady.ask(BUDGET - len(asked), exclude=set(asked))
            assert len(pop) <= BUDGET - len(asked)
            if lean:
                assert len(pop) <= 1 and steady.queue_extra == 0
            if len(pop) == 0:
                break
            algorithm.evaluator.eval(problem, pop)
            asked.extend(tuple(int(v) for v in x) for x in pop.get("X"))
            pending.extend(pop)
        k = min(len(pending), int(rng.integers(1, 4)))
        group = [pending.pop(int(i)) for i in sorted(rng.choice(len(pending), k, replace=False),
                                                         reverse=True)]
        from pymoo.core.population import Population

        held_before = steady.held
        told_now = steady.tell(Population.create(*group))
        if not told_now:
            assert steady.held == held_before + k  # the initial population is held ...
        told += k
        if roundtrip:
            steady = pickle.loads(pickle.dumps(steady))
            algorithm = steady.algorithm
    steady.flush()
    return asked, steady


@pytest.mark.parametrize("method", ["hamp", "nsga2", "random"])
def test_no_genome_is_asked_twice_and_every_result_is_told(method: str) -> None:
    asked, steady = _run(method, order_seed=0)
    assert len(asked) == BUDGET and len(set(asked)) == BUDGET
    assert steady.held == 0 and steady.algorithm.n_real_evals == BUDGET
    assert steady.initial_size == 6  # ... until the initial population (pop_size) is complete


def test_same_arrival_order_same_search_other_order_other_search() -> None:
    first, _ = _run("hamp", order_seed=1)
    again, _ = _run("hamp", order_seed=1)
    other, _ = _run("hamp", order_seed=2)
    assert first == again
    assert first != other


def test_default_ask_size() -> None:
    assert [default_ask_size(s) for s in (1, 4, 5, 16, 64)] == [2, 2, 3, 8, 32]
    with pytest.raises(ValueError):
        SteadyState(object(), ask_size=0)


EXPERIMENTS = {"believer": True, "initial_tell": 3, "lean_initial": True, "pooled_credits": True,
               "aligned_credits": False, "queue_margin": 1, "seeded_fillers": True,
               "bred_fillers": True, "cut_every": 3}
#: The design before issue 13's quality work: every option off.
OLD_DESIGN = {"believer": False, "lean_initial": False, "bred_fillers": False}


def test_async_experiment_options_keep_the_contract() -> None:
    asked, steady = _run("hamp", order_seed=1, **EXPERIMENTS)
    assert len(asked) == BUDGET and len(set(asked)) == BUDGET
    assert steady.held == 0 and steady.algorithm.n_real_evals == BUDGET
    assert steady.queue_extra == 1  # initialised: the queue is back (queue_margin)
    again, _ = _run("hamp", order_seed=1, **EXPERIMENTS)
    plain, plain_steady = _run("hamp", order_seed=1, **OLD_DESIGN)
    assert asked == again and asked != plain
    # Initial population told after 3 results, one random genome per ask until then: fewer
    # random genomes before HAMP breeds.
    def initial(s: SteadyState) -> int:
        return s.algorithm.archive_origin.count("initial")
    assert initial(steady) < initial(plain_steady)
    with pytest.raises(ValueError):
        SteadyState(object(), ask_size=2, initial_tell=0)


def test_bred_fillers_are_unknown_neighbours_of_the_held_front() -> None:
    problem = SyntheticPruningProblem()
    settings = SearchSettings(pop_size=6, budget=BUDGET)
    algorithm = make_algorithm("hamp", settings)
    algorithm.setup(problem, termination=MaximumFunctionCallTermination(BUDGET), seed=3)
    steady = SteadyState(algorithm, ask_size=2, lean_initial=True, bred_fillers=True)
    first = steady.ask(BUDGET)
    algorithm.evaluator.eval(problem, first)
    from pymoo.core.population import Population

    assert not steady.tell(Population.create(*first[:4]))  # held: the initial population is 6
    held = np.asarray(first[:4].get("X"), dtype=float)
    F = np.asarray(first[:4].get("F"), dtype=float)
    from prunesearch.search.indicators import non_dominated

    parents = held[non_dominated(F)]
    known = {tuple(x) for x in np.asarray(first.get("X"), dtype=int)}
    fillers = [steady.ask(BUDGET, exclude=known) for _ in range(6)]
    X = np.array([np.asarray(p.get("X"))[0] for p in fillers], dtype=float)
    assert len({tuple(x) for x in X}) == 6 and not {tuple(int(v) for v in x) for x in X} & known
    # Each one is a one- or two-gene step from a non-dominated held result (a random genome of
    # this 30-gene problem is dozens of steps from any other).
    steps = np.abs(X[:, None, :] - parents[None, :, :]).sum(axis=2).min(axis=1)
    assert np.all(steps <= 2), steps
    assert {str(o) for o in np.concatenate([p.get("origin") for p in fillers])} == {"initial"}
    plain = SteadyState(make_algorithm("hamp", settings), ask_size=2, lean_initial=True,
                        bred_fillers=False)
    plain.algorithm.setup(problem, termination=MaximumFunctionCallTermination(BUDGET), seed=3)
    first = plain.ask(BUDGET)
    plain.algorithm.evaluator.eval(problem, first)
    plain.tell(Population.create(*first[:4]))
    x = np.asarray(plain.ask(BUDGET).get("X"), dtype=float)[0]
    assert np.abs(x[None, :] - parents).sum(axis=1).min() > 2


def test_aligned_credits_close_every_fully_told_ask_and_keep_the_contract() -> None:
    asked, steady = _run("hamp", order_seed=1, aligned_credits=True)
    assert len(asked) == BUDGET and len(set(asked)) == BUDGET
    algorithm = steady.algorithm
    # Every ask whose candidates were all told is closed; only asks with candidates never
    # told (none here: the whole budget was told) could stay open.
    assert algorithm._ask_number > 3 and not algorithm._ask_records and not algorithm._ask_of
    rewarded = [h["rewarded"] for h in algorithm.history_log if h.get("rewarded")]
    assert rewarded and all(isinstance(r, list) for r in rewarded)
    default, _ = _run("hamp", order_seed=1)
    assert asked != default


def test_async_mode_caps_the_forest_generational_and_old_states_fit_uncapped(monkeypatch) -> None:
    # Async HAMP refits at every ask: its forest is capped (SteadyState.SURROGATE_CAPS) so the
    # refit does not grow with the archive; generational HAMP and async states pickled before
    # the option existed (class default False) fit uncapped, as they were made.
    import prunesearch.search.hamp as hamp_module

    seen: list[dict] = []
    real = hamp_module.make_surrogate

    def spy(name, **options):
        seen.append(options)
        return real(name, **options)

    monkeypatch.setattr(hamp_module, "make_surrogate", spy)
    _run("hamp", order_seed=0)
    fits = seen[1:]  # seen[0]: HAMP's constructor validating its options
    assert fits and all(o.get("max_points") == 1024 and o.get("max_samples") == 512
                        and o.get("n_trees") == 50
                        for o in fits)
    seen.clear()
    monkeypatch.setattr(SteadyState, "__init__", _old_init(SteadyState.__init__))
    _run("hamp", order_seed=0)
    assert len(seen) > 1 and not any("max_points" in o or "max_samples" in o for o in seen)
    seen.clear()
    problem = SyntheticPruningProblem()
    settings = SearchSettings(pop_size=6, budget=24)
    algorithm = make_algorithm("hamp", settings)
    algorithm.setup(problem, termination=MaximumFunctionCallTermination(24), seed=3)
    while algorithm.has_next():
        pop = algorithm.ask()
        algorithm.evaluator.eval(problem, pop)
        algorithm.tell(infills=pop)
    assert len(seen) > 1 and not any("max_points" in o or "max_samples" in o for o in seen)


def test_async_hamp_refits_once_per_population_and_a_restored_state_refits_the_same_forest(
        monkeypatch) -> None:
    # Async asks come every ask_size results; the forest is refit once per pop_size successes
    # (the generational cadence) and reused in between. The fit is never pickled: a state
    # restored after every tell rebuilds each reused forest from its record, so the search
    # asks exactly what the uninterrupted one asked.
    import prunesearch.search.hamp as hamp_module

    fits: list[tuple[int, int]] = []
    real = hamp_module.HAMP._fit_surrogate_on

    def spy(self, rows, seed):
        fits.append((int((~self.archive_failed[:rows]).sum()), seed))
        return real(self, rows, seed)

    monkeypatch.setattr(hamp_module.HAMP, "_fit_surrogate_on", spy)
    uninterrupted, steady = _run("hamp", order_seed=0)
    assert steady.algorithm.surrogate_refit_every == 6
    n_ok = [n for n, _ in fits]
    assert len(fits) >= 3 and all(b - a >= 6 for a, b in zip(n_ok, n_ok[1:])), fits
    assert len({seed for _, seed in fits}) == len(fits)
    fresh = list(fits)
    fits.clear()
    restored, _ = _run("hamp", order_seed=0, roundtrip=True)
    assert restored == uninterrupted
    # The same forests, some fitted again after a restore (same rows, same seed).
    assert set(fits) == set(fresh) and len(fits) > len(fresh)
    fits.clear()
    every_ask, _ = _run("hamp", order_seed=0, surrogate_refit=False)  # a fit at every ask
    assert len(fits) > len(fresh) and every_ask != uninterrupted


def _old_init(init):
    def old(self, *args, **kwargs):
        init(self, *args, **kwargs)
        del self.surrogate_caps  # as a state pickled before the option reads it
    return old


def test_adaptive_margin_follows_the_told_groups_capped_by_the_margin_and_resumes() -> None:
    from pymoo.core.population import Population

    problem = SyntheticPruningProblem()
    algorithm = make_algorithm("hamp", SearchSettings(pop_size=6, budget=60))
    algorithm.setup(problem, termination=MaximumFunctionCallTermination(60), seed=3)
    steady = SteadyState(algorithm, ask_size=8, adaptive_margin=True)  # fixed margin: 4
    pending = []
    while not steady.initialized:
        pop = steady.ask(1 if steady.initial_size else 6, exclude=set())
        algorithm.evaluator.eval(problem, pop)
        pending.extend(pop)
        steady.tell(Population.create(*pending[:1]))
        pending = pending[1:]
    assert steady.queue_extra == 4  # no steady-state group told yet: the fixed margin
    sizes = []
    for size in (1, 1, 3, 1, 1, 1, 1, 1, 1, 1, 1):
        while len(pending) < size:
            pop = steady.ask(8)
            algorithm.evaluator.eval(problem, pop)
            pending.extend(pop)
        steady.tell(Population.create(*pending[:size]))
        pending = pending[size:]
        sizes.append(size)
        assert steady.queue_extra == min(4, max(sizes[-SteadyState.ADAPTIVE_WINDOW:]))
        steady = pickle.loads(pickle.dumps(steady))  # as a resumed driver's state
        algorithm = steady.algorithm
    assert steady.queue_extra == 1  # the group of 3 left the window
    fixed = SteadyState(make_algorithm("hamp", SearchSettings(pop_size=6)), ask_size=8)
    assert fixed.adaptive_margin is False and fixed.queue_margin == 4
    # The adaptive margin keeps the contract, and the same arrival order gives the same search
    # uninterrupted and restored after every tell.
    asked, _ = _run("hamp", order_seed=1, adaptive_margin=True)
    restored, _ = _run("hamp", order_seed=1, roundtrip=True, adaptive_margin=True)
    assert len(set(asked)) == BUDGET and asked == restored
