"""Asynchronous (steady-state) ask/tell over any search of the registry.

The generational loop asks one batch, waits for all of it and tells it back. An asynchronous
driver instead keeps a queue of asked candidates, hands each free evaluator the next one and
tells results back as they arrive, singly or in small groups. :class:`SteadyState` adapts the
registry's pymoo algorithms (HAMP, its ablations, NSGA-II, random search) to that protocol
without changing what they do between an ask and a tell:

* **Initial population.** The first ask is the algorithm's own initial population (HAMP's seeded
  keep ratios plus random genomes, NSGA-II's random sampling). Until that many results have
  come back, the results are held and told together as the initial population, so
  ``_initialize_advance`` sees a full population, and each evaluator that frees up meanwhile
  gets one filler (``lean_initial``: asked one at a time, no queue beyond the evaluators):
  a neighbour move of a non-dominated held result (``bred_fillers``, HAMP; a random unknown
  genome while fewer than two are held, and for the other algorithms). Every later result is
  told as it arrives.
* **Later asks** are the algorithm's normal ``ask()`` with fewer offspring: ``ask_size``
  offspring of variation per ask (HAMP: plus its surrogate-ranked local-search moves, their cap
  scaled by ``ask_size / pop_size`` so that moves keep their generational share; its surrogate
  is refit at every ask from everything told so far).
* **Tells** merge the told candidates into the population and cut it back to ``pop_size`` with
  the algorithm's environmental selection (HAMP: the operator its portfolio draws, credited with
  the hypervolume change that the told group brought): a (mu + k) steady-state scheme, with k
  the size of the told group.
* **Believer asks.** HAMP ranks each ask (pre-screen, local search) with the candidates in
  flight counted as evaluated at their surrogate-predicted objectives (``believer``).
* **Duplicates.** Everything asked counts as known at once (:class:`~.base.ArchivedSearch`), so
  no genome is asked twice; :meth:`SteadyState.ask` also drops genomes the caller names as
  known or in flight.

Everything here is a deterministic function of the seed, the objective values and the order
(and grouping) in which results are told: a caller that journals that order can replay it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

import numpy as np
from pymoo.core.population import Population

__all__ = ["SteadyState", "default_ask_size", "population_of"]


def population_of(individuals: Any) -> Population:
    """A pymoo population of asked individuals (the caller need not import pymoo)."""
    return Population.create(*individuals)


def default_ask_size(slots: int) -> int:
    """Offspring per ask when ``search.async_ask_size`` is not set: ``max(2, ceil(slots / 2))``.

    An ask costs HAMP 0.15-0.2 s at 64 slots (60% of it the random-forest fit), nearly whatever
    its size (16 offspring: 164 ms, 32: 202 ms), so asks are amortised over half the pool: at
    64 slots of 1 s evaluations a quarter of the pool per ask kept the driver's main thread
    saturated on a 2-core machine (bench/scaling.py, docs/BENCHMARKS.md).
    """
    return max(2, -(-int(slots) // 2))


class SteadyState:
    """Steady-state ask/tell over an algorithm that was ``setup()`` already.

    Args:
        algorithm: a registry algorithm (an :class:`~.base.ArchivedSearch` pymoo algorithm)
            after ``setup(problem, termination=..., seed=...)``, before its first ask.
        ask_size: offspring of variation per ask once the initial population is told.
        believer: rank each ask (HAMP's pre-screen and local search) with the candidates in
            flight counted as evaluated at their predicted objectives ("kriging believer").
            Default on.
        initial_tell: tell the held initial results once this many arrived (default: the
            whole initial population).
        lean_initial: until the initial population is told, ask one filler genome at a time
            and keep no queue beyond one candidate per evaluator (:attr:`queue_extra` 0).
            Default on.
        pooled_credits: HAMP's per-batch records (pre-screen AUC, batch rank correlation)
            pool the told groups until one ask's worth is in (otherwise they only see the
            candidates of the last ask that the told group holds, rarely enough to score).
        aligned_credits: HAMP's records (portfolio credit, pre-screen AUC, batch rank
            correlation, local-search share) go to the ask that bred the told candidates: each
            ask is tagged with the operator whose selection made the population it was bred
            from, and its records are closed once all of its candidates are told.
        queue_margin: keep asked candidates beyond one per evaluator down to this many before
            asking again (:attr:`queue_extra`; default half an ask, ``ceil(ask_size / 2)``;
            states pickled before session 10 keep ``ask_size``): a smaller margin lets asked
            candidates wait less in the queue (they are bred from fresher results), a larger
            one covers more results arriving while an ask is computed.
        seeded_fillers: while the initial population is incomplete, fill free evaluators with
            the algorithm's seeded genomes first (HAMP on pruning genomes: uniform keep ratios
            between and below the initial seeds, ``HAMP.filler_genomes``), random ones after.
        bred_fillers: while the initial population is incomplete, fill free evaluators with
            neighbour moves of the held results' non-dominated ones (``HAMP.filler_moves``;
            random genomes while fewer than two are held). Default on.
        cut_every: HAMP: told results join the population uncut until this many are in; then
            the portfolio draws one operator that cuts it back to ``pop_size`` and is credited,
            at the next cut, with the hypervolume the results told in between added (as one
            generation; default None: a cut at every tell).

        surrogate_caps: HAMP: fit the random forest on the most recent 1,024 evaluations with
            512 bootstrap draws per tree, 50 trees (:attr:`SURROGATE_CAPS`;
            ``HAMP.surrogate_caps``; 50 trees since session 8, with no measurable HV cost):
            an ask refits the forest, and uncapped its cost grows with the archive until the
            driver cannot keep up (64 slots of 1 s evaluations: 0.95 s per ask at 3,200
            evaluations). Default on.
        adaptive_margin: cap the queue margin at the largest of the last
            :attr:`ADAPTIVE_WINDOW` told groups (at least 1): a group holds the results that
            arrived while the main thread was busy, about what arrives during the next ask. With
            evaluations long against an ask, groups are single results and so is the margin;
            with a flood of short ones it stays at ``queue_margin``. Group sizes are journaled
            (each line's ``tell``), so a resumed run replays the same margins. Default off.
        surrogate_refit: HAMP: refit the surrogate once per ``pop_size`` successful results
            (``HAMP.surrogate_refit_every``), the generational mode's cadence, and reuse the
            last fit for the asks in between (an ask per ``ask_size`` results would otherwise
            refit about twice as often as a generation does). Default on.

        All nine options before ``surrogate_caps`` were measured in docs/BENCHMARKS.md (issue 13); the defaults (``believer``,
        ``lean_initial``, ``bred_fillers`` on, the rest off) are the measured best. No option
        touches the generational mode: HAMP reads the attributes they set
        (``pending_X``, ``accumulate_credits``, ``aligned_credits``, ``cut_every``) only when
        this class sets them.

    Attributes:
        initial_size: size of the initial population (known after the first ask).
        tells: groups told to the algorithm so far (the held initial results count once).
    """

    # Defaults for states pickled before these options existed (exact resume of old runs:
    # off, as those runs were made; new states get the constructor's defaults).
    believer = False
    initial_tell: int | None = None
    lean_initial = False
    pooled_credits = False
    aligned_credits = False
    queue_margin: int | None = None
    seeded_fillers = False
    bred_fillers = False
    cut_every: int | None = None
    surrogate_caps = False
    surrogate_refit = False
    adaptive_margin = False
    _group_sizes: tuple[int, ...] = ()

    #: Told groups the adaptive margin looks back over.
    ADAPTIVE_WINDOW = 8

    #: The random forest's caps in asynchronous mode (``surrogate_caps``).
    SURROGATE_CAPS = {"max_points": 1024, "max_samples": 512, "n_trees": 50}

    def __init__(self, algorithm: Any, *, ask_size: int, believer: bool = True,
                 initial_tell: int | None = None, lean_initial: bool = True,
                 pooled_credits: bool = False, aligned_credits: bool = False,
                 queue_margin: int | None = None, seeded_fillers: bool = False,
                 bred_fillers: bool = True, cut_every: int | None = None,
                 surrogate_caps: bool = True, surrogate_refit: bool = True,
                 adaptive_margin: bool = False) -> None:
        if ask_size < 1:
            raise ValueError(f"ask_size must be >= 1, got {ask_size!r}")
        if initial_tell is not None and initial_tell < 1:
            raise ValueError(f"initial_tell must be >= 1 or None, got {initial_tell!r}")
        self.algorithm = algorithm
        self.ask_size = int(ask_size)
        self.believer = bool(believer)
        self.initial_tell = initial_tell
        self.lean_initial = bool(lean_initial)
        self.pooled_credits = bool(pooled_credits)
        self.aligned_credits = bool(aligned_credits)
        if queue_margin is not None and queue_margin < 0:
            raise ValueError(f"queue_margin must be >= 0 or None, got {queue_margin!r}")
        # Half an ask (docs/METHODS.md, async mode): the stored value is an int, so that
        # None keeps meaning ``ask_size`` for states pickled when that was the default.
        self.queue_margin = (-(-self.ask_size // 2) if queue_margin is None
                             else int(queue_margin))
        self.seeded_fillers = bool(seeded_fillers)
        self.bred_fillers = bool(bred_fillers)
        if cut_every is not None and cut_every < 1:
            raise ValueError(f"cut_every must be >= 1 or None, got {cut_every!r}")
        self.cut_every = cut_every
        self.surrogate_caps = bool(surrogate_caps)
        self.surrogate_refit = bool(surrogate_refit)
        self.adaptive_margin = bool(adaptive_margin)
        self._group_sizes = ()
        self._pending: dict[tuple[int, ...], np.ndarray] = {}
        self.initial_size: int | None = None
        self.tells = 0
        self._held = Population.empty()
        self._steady = False

    @property
    def initialized(self) -> bool:
        """True once the initial population has been told."""
        return bool(self.algorithm.is_initialized)

    def ask(self, limit: int, *, exclude: Collection[tuple[int, ...]] = ()) -> Population:
        """Up to ``limit`` new candidates, none archived, asked before or in ``exclude``.

        Args:
            limit: the most candidates wanted (e.g. the budget left after everything in flight).
            exclude: integer genomes the caller already holds (journal, in flight).

        Returns:
            The candidates (integer problems: integer ``X``); empty when the algorithm has
            nothing new to propose (its space is exhausted) or ``limit`` is 0.
        """
        algorithm = self.algorithm
        if limit <= 0:
            return Population.empty()
        if self.initial_size is None:
            pop = algorithm.ask()
        elif not algorithm.is_initialized:
            pop = self._random(min(1 if self.lean_initial else self.ask_size, limit))
        else:
            self._configure()
            if self.believer:
                algorithm.pending_X = (np.array(list(self._pending.values()), dtype=float)
                                       if self._pending else None)
            pop = algorithm.ask()
            if self.believer:
                algorithm.pending_X = None
        if pop is None or len(pop) == 0:
            pop = Population.empty()
        bred = self.initial_size is not None and algorithm.is_initialized
        pop = self._drop(pop, exclude)[:limit]
        if bred and self.aligned_credits and hasattr(algorithm, "open_ask_record"):
            algorithm.open_ask_record(pop)
        if self.initial_size is None:
            self.initial_size = len(pop)
        if self.believer:
            for x in (pop.get("X") if len(pop) else []):
                self._pending[self._key(x)] = np.asarray(x, dtype=float)
        return pop

    def tell(self, pop: Population) -> bool:
        """Tell evaluated candidates (objectives set; failed ones marked with ``mark_failed``).

        Returns:
            True when the algorithm was told now; False while initial results are held until
            the initial population is complete.
        """
        algorithm = self.algorithm
        if self.believer:
            for x in (pop.get("X") if len(pop) else []):
                self._pending.pop(self._key(x), None)
        if not algorithm.is_initialized:
            self._held = Population.merge(self._held, pop)
            need = max(1, self.initial_size or 0)
            if self.initial_tell is not None:
                need = min(need, self.initial_tell)
            if len(self._held) < need:
                return False
            pop, self._held = self._held, Population.empty()
        if self.adaptive_margin and algorithm.is_initialized:
            self._group_sizes = (*self._group_sizes, len(pop))[-self.ADAPTIVE_WINDOW:]
        algorithm.tell(infills=pop)
        self.tells += 1
        return True

    def flush(self) -> None:
        """Tell any held initial results (a search whose budget ended before its initial
        population was complete)."""
        if len(self._held):
            pop, self._held = self._held, Population.empty()
            self.algorithm.tell(infills=pop)
            self.tells += 1

    @property
    def queue_extra(self) -> int:
        """Candidates the caller keeps asked beyond one per evaluator: ``ask_size``; with
        ``lean_initial``, none until the initial population is told (so that few random
        genomes wait in the queue while there is nothing to breed from)."""
        if self.lean_initial and not self.initialized:
            return 0
        margin = self.ask_size if self.queue_margin is None else self.queue_margin
        if self.adaptive_margin and self._group_sizes:
            # Results that arrived while the main thread was busy (a told group) are what
            # arrives during the next ask: the largest recent group, at most the fixed margin.
            margin = min(margin, max(1, max(self._group_sizes)))
        return margin

    @property
    def held(self) -> int:
        """Initial results held until the initial population is complete."""
        return len(self._held)

    # ------------------------------------------------------------------ internals
    def _configure(self) -> None:
        """Switch the algorithm to ``ask_size`` offspring per ask (once, after initialisation)."""
        if self._steady:
            return
        self._steady = True
        algorithm = self.algorithm
        if self.pooled_credits:
            # HAMP's per-batch records (pre-screen AUC, batch rank correlation) pool the told
            # groups until one ask's worth is in.
            algorithm.accumulate_credits = True
        if self.aligned_credits:
            algorithm.aligned_credits = True
        if self.surrogate_caps and hasattr(algorithm, "surrogate_caps"):
            algorithm.surrogate_caps = dict(self.SURROGATE_CAPS)
        pop_size = int(getattr(algorithm, "pop_size", self.ask_size) or self.ask_size)
        if self.surrogate_refit and hasattr(algorithm, "surrogate_refit_every"):
            algorithm.surrogate_refit_every = max(1, pop_size)
        if self.cut_every and hasattr(algorithm, "portfolio"):
            algorithm.cut_every = int(self.cut_every)
        if hasattr(algorithm, "n_offsprings"):
            algorithm.n_offsprings = self.ask_size
            local = getattr(algorithm, "local_search", None)
            if local is not None and dataclasses.is_dataclass(local) and local.max_moves > 0:
                moves = max(1, round(local.max_moves * self.ask_size / max(1, pop_size)))
                algorithm.local_search = dataclasses.replace(
                    local, max_moves=min(local.max_moves, moves))
        else:  # random search: pop_size is only its batch size
            algorithm.pop_size = self.ask_size

    def _random(self, n: int) -> Population:
        algorithm = self.algorithm
        pop = Population.empty()
        if self.seeded_fillers and hasattr(algorithm, "filler_genomes"):
            pop = algorithm.filler_genomes(n)
        if self.bred_fillers and len(pop) < n and hasattr(algorithm, "filler_moves"):
            pop = Population.merge(pop, algorithm.filler_moves(self._held, n - len(pop)))
        if len(pop) < n:
            pop = Population.merge(pop, algorithm._random_unknown(n - len(pop), exclude=pop))
        if len(pop) == 0:
            return pop
        if algorithm.integer:
            pop.set("X", np.rint(np.asarray(pop.get("X"), dtype=float)).astype(int))
        pop = algorithm.repair_to_limits(pop)
        for x in pop.get("X"):
            algorithm.known_genomes.known.add(algorithm.known_genomes.key(x))
        pop.set("origin", "initial")
        return pop

    @staticmethod
    def _key(x: Any) -> tuple[int, ...]:
        return tuple(int(v) for v in np.rint(np.asarray(x, dtype=float)))

    @staticmethod
    def _drop(pop: Population, exclude: Collection[tuple[int, ...]]) -> Population:
        if not len(pop) or not exclude:
            return pop
        X = np.asarray(pop.get("X"))
        keep = [i for i, x in enumerate(X)
                if tuple(int(v) for v in np.rint(np.asarray(x, dtype=float))) not in exclude]
        return pop[keep] if len(keep) < len(pop) else pop
