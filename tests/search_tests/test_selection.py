"""Selection operators of the portfolio and the credit-based choice among them."""

from __future__ import annotations

import numpy as np
import pytest
from pymoo.core.population import Population
from pymoo.problems import get_problem

from prunesearch.search.selection import IBEASurvival, Portfolio, make_selector


def _pop(F):
    F = np.asarray(F, dtype=float)
    return Population.new(X=np.arange(len(F))[:, None].astype(float), F=F)


@pytest.mark.parametrize("name", ["nsga2", "sms-emoa", "spea2", "ibea"])
def test_selectors_drop_dominated_points_first(name):
    problem = get_problem("zdt1")
    front = [[0.0, 1.0], [0.25, 0.5], [0.5, 0.25], [1.0, 0.0]]
    dominated = [[0.6, 0.6], [0.9, 0.9], [1.1, 1.1]]
    pop = _pop(front + dominated)
    survivors = make_selector(name).do(problem, pop, n_survive=4, random_state=np.random.default_rng(0))
    assert sorted(survivors.get("X")[:, 0].astype(int)) == [0, 1, 2, 3]


def test_ibea_truncates_the_most_crowded_point():
    # Two near-identical points in the middle: IBEA keeps the extremes and one of the pair.
    F = [[0.0, 1.0], [0.5, 0.5], [0.501, 0.499], [1.0, 0.0]]
    survivors = IBEASurvival().do(get_problem("zdt1"), _pop(F), n_survive=3)
    kept = sorted(survivors.get("X")[:, 0].astype(int))
    assert kept[0] == 0 and kept[-1] == 3 and len(set(kept) & {1, 2}) == 1


def test_probability_matching_with_floor():
    p = Portfolio(("nsga2", "sms-emoa", "spea2", "ibea"), window=2, min_probability=0.05)
    assert np.allclose(p.probabilities(), 0.25)  # nothing known: uniform
    p.reward("nsga2", 0.3)
    p.reward("sms-emoa", 0.1)
    p.reward("spea2", 0.0)
    p.reward("ibea", 0.0)
    probs = dict(zip(p.names, p.probabilities()))
    assert probs["nsga2"] == pytest.approx(0.05 + 0.8 * 0.75)
    assert probs["spea2"] == pytest.approx(0.05)  # the floor: never starved
    assert sum(probs.values()) == pytest.approx(1.0)
    # The window forgets old credit.
    p.reward("nsga2", 0.0)
    p.reward("nsga2", 0.0)
    assert p.mean_credits()["nsga2"] == 0.0


def test_untried_operators_are_assumed_as_good_as_the_best():
    p = Portfolio(("nsga2", "ibea"), window=3, min_probability=0.0)
    p.reward("nsga2", 0.2)
    assert np.allclose(p.probabilities(), 0.5)


def test_choice_follows_the_probabilities():
    p = Portfolio(("nsga2", "ibea"), window=3, min_probability=0.1)
    p.reward("nsga2", 1.0)
    p.reward("ibea", 0.0)
    rng = np.random.default_rng(0)
    draws = [p.choose(rng) for _ in range(2000)]
    assert draws.count("ibea") / len(draws) == pytest.approx(0.1, abs=0.03)


@pytest.mark.parametrize("kwargs, word", [
    ({"names": ()}, "names"),
    ({"names": ("nsga2", "nsga2")}, "repeat"),
    ({"names": ("nsga2", "foo")}, "foo"),
    ({"names": ("nsga2",), "window": 0}, "window"),
    ({"names": ("nsga2", "ibea", "spea2", "sms-emoa"), "min_probability": 0.3}, "min_probability"),
])
def test_portfolio_validation(kwargs, word):
    names = kwargs.pop("names")
    with pytest.raises(ValueError, match=word):
        Portfolio(names, **kwargs)
