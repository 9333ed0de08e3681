"""Environmental-selection operators (``Selector``s) and HAMP's credit-based portfolio.

The four selectors are pymoo ``Survival`` objects: NSGA-II's rank and crowding
(``RankAndCrowding``), SMS-EMOA's rank and least hypervolume contribution
(``LeastHypervolumeContributionSurvival``), SPEA2's strength fitness with nearest-neighbour
truncation (``SPEA2Survival``) and IBEA's additive-epsilon indicator fitness
(:class:`IBEASurvival`, written here because pymoo has no IBEA).

:class:`Portfolio` picks one of them per generation by probability matching on credit: each
operator's credit is the mean of the hypervolume gains it produced the last ``window`` times it
was used, and every operator keeps at least ``min_probability`` so none starves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from pymoo.algorithms.moo.sms import LeastHypervolumeContributionSurvival
from pymoo.algorithms.moo.spea2 import SPEA2Survival
from pymoo.core.population import Population
from pymoo.core.survival import Survival
from pymoo.operators.survival.rank_and_crowding import RankAndCrowding

__all__ = ["SELECTORS", "IBEASurvival", "Portfolio", "Selector", "make_selector"]


class Selector(Protocol):
    """Environmental selection: keep ``n_survive`` of ``pop`` (a pymoo ``Survival``)."""

    def do(self, problem, pop: Population, *args, n_survive: int | None = None,
           random_state: np.random.Generator | None = None, **kwargs) -> Population:
        """Return the survivors (pymoo's ``Survival.do`` signature)."""
        ...


class IBEASurvival(Survival):
    """IBEA selection with the additive epsilon indicator (Zitzler and Kuenzli, PPSN 2004).

    Objectives are scaled to [0, 1] over the population; the fitness of x is
    ``-sum_{y != x} exp(-I(y, x) / (c * kappa))`` with ``I(y, x) = max_k (y_k - x_k)`` (how far y
    must move to weakly dominate x) and ``c`` the largest ``|I|``. The worst individual is removed
    and the others' fitness updated, one at a time, until ``n_survive`` remain.

    Args:
        kappa: Fitness scaling factor (0.05 in the original paper).
    """

    def __init__(self, *, kappa: float = 0.05) -> None:
        super().__init__(filter_infeasible=True)
        if not kappa > 0:
            raise ValueError(f"kappa must be > 0, got {kappa!r}")
        self.kappa = kappa

    def _do(self, problem, pop, *args, n_survive=None, **kwargs):
        F = np.asarray(pop.get("F"), dtype=float)
        lo, hi = F.min(axis=0), F.max(axis=0)
        Fn = (F - lo) / np.where(hi - lo > 0, hi - lo, 1.0)
        # indicator[i, j] = I(i, j): the shift that makes i weakly dominate j.
        indicator = np.max(Fn[:, None, :] - Fn[None, :, :], axis=2)
        c = float(np.max(np.abs(indicator))) or 1.0
        contrib = np.exp(-indicator / (c * self.kappa))
        np.fill_diagonal(contrib, 0.0)
        fitness = -contrib.sum(axis=0)
        alive = np.ones(len(pop), dtype=bool)
        while alive.sum() > n_survive:
            worst = int(np.flatnonzero(alive)[np.argmin(fitness[alive])])
            alive[worst] = False
            fitness += contrib[worst]
        return pop[np.flatnonzero(alive)]


#: Selector names (the ``search.portfolio`` config values) and their constructors.
SELECTORS = {
    "nsga2": lambda: RankAndCrowding(),
    "sms-emoa": lambda: LeastHypervolumeContributionSurvival(),
    "spea2": lambda: SPEA2Survival(normalize=True),
    "ibea": lambda: IBEASurvival(),
}


def make_selector(name: str) -> Survival:
    """Build the selector called ``name`` (one of :data:`SELECTORS`)."""
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r}; valid: {', '.join(SELECTORS)}")
    return SELECTORS[name]()


class Portfolio:
    """Credit-based choice among selection operators (probability matching with a floor).

    Args:
        names: Operator names, in a fixed order (the order of the recorded probabilities).
        window: How many of each operator's most recent credits are averaged.
        min_probability: Probability floor of every operator; ``len(names) * min_probability``
            must not exceed 1.
    """

    def __init__(self, names: Sequence[str], *, window: int = 5,
                 min_probability: float = 0.05) -> None:
        names = tuple(names)
        if not names:
            raise ValueError("names must hold at least one selector name, got ()")
        if len(set(names)) != len(names):
            raise ValueError(f"names must not repeat, got {names!r}")
        for name in names:
            if name not in SELECTORS:
                raise ValueError(f"unknown selector {name!r} in names; valid: "
                                 + ", ".join(SELECTORS))
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        if not 0.0 <= min_probability or min_probability * len(names) > 1.0:
            raise ValueError(f"min_probability must be in [0, 1/{len(names)}], "
                             f"got {min_probability!r}")
        self.names = names
        self.window = window
        self.min_probability = min_probability
        self.credits: dict[str, list[float]] = {n: [] for n in names}
        self.selectors = {n: make_selector(n) for n in names}

    def mean_credits(self) -> dict[str, float | None]:
        """Mean credit over the window per operator (None if never rewarded)."""
        return {n: (float(np.mean(c)) if c else None) for n, c in self.credits.items()}

    def probabilities(self) -> np.ndarray:
        """Selection probability of each operator, in the order of ``names``."""
        means = self.mean_credits()
        known = [m for m in means.values() if m is not None]
        # An operator never tried is assumed as good as the best one seen, so each is tried early.
        optimistic = max(known) if known else 1.0
        quality = np.array([max(0.0, optimistic if means[n] is None else means[n])
                            for n in self.names])
        k = len(self.names)
        if quality.sum() <= 0:
            return np.full(k, 1.0 / k)
        return self.min_probability + (1.0 - k * self.min_probability) * quality / quality.sum()

    def choose(self, rng: np.random.Generator) -> str:
        """Draw one operator name with :meth:`probabilities`."""
        p = self.probabilities()
        return self.names[int(rng.choice(len(self.names), p=p / p.sum()))]

    def reward(self, name: str, credit: float) -> None:
        """Record the credit an operator earned (the window keeps the latest ones)."""
        history = self.credits[name]
        history.append(float(credit))
        del history[: max(0, len(history) - self.window)]
