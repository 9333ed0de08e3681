"""HAMP: memetic multi-objective search with portfolio selection and surrogate local search.

Our reading of Hong, Li, Liu, Yang and Tang, "Multi-objective evolutionary optimization for
hardware-aware neural network pruning" (Fundamental Research 4(4), 2024), whose abstract fixes the
structure (portfolio-based selection + surrogate-assisted local search) but not the details; the
choices below are ours and are listed in docs/METHODS.md.

Why one module of ~450 lines: it is the pymoo ``Algorithm`` subclass (ask/tell hooks and the
state pickled for exact resume); selection, surrogate and local-search moves are separate.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import binary_tournament
from pymoo.core.algorithm import Algorithm
from pymoo.core.mating import Mating
from pymoo.core.population import Population
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import FloatRandomSampling, IntegerRandomSampling
from pymoo.operators.selection.tournament import TournamentSelection
from pymoo.operators.survival.rank_and_crowding import RankAndCrowding
from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
from scipy.stats import spearmanr

from prunesearch.search.base import ArchivedSearch
from prunesearch.search.indicators import hv_contributions, hypervolume, non_dominated
from prunesearch.search.local_search import greedy_select, improvement_scores, neighbour_moves
from prunesearch.search.problems import GenomeProblem
from prunesearch.search.selection import Portfolio
from prunesearch.search.settings import LocalSearchSettings
from prunesearch.search.surrogate import SURROGATES, make_surrogate

__all__ = ["DEFAULT_KEEP_RATIOS", "HAMP"]

#: Uniform keep ratios seeded into the initial population of pruning genomes (1.0 is the
#: full-width genome), after the HAMP paper's seeding (docs/METHODS.md).
DEFAULT_KEEP_RATIOS: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


class HAMP(ArchivedSearch, Algorithm):
    """Memetic MOEA: variation + credit-based selection portfolio + surrogate local search.

    Each generation asks ONE batch: the offspring of variation (binary tournament on rank and
    crowding, SBX, polynomial mutation; rounded on integer problems) followed by the local-search
    moves the surrogate ranks best. When the batch is told back, the archive and the surrogate's
    training set grow, the operator used last gets its credit, and one selection operator of the
    portfolio (drawn by probability matching on credit) cuts population + batch back to
    ``pop_size``. The result is the feasible non-dominated set of the whole archive.

    Works with ``pymoo.optimize.minimize(problem, HAMP(), ("n_evals", N), seed=s)`` on any problem
    with bounded integer (``vtype=int``) or real variables and 2 or 3 objectives (more work, but
    hypervolume grows costly), constraints optional. Problems that declare ``cheap_objectives``
    and ``evaluate_cheap(X)`` have those objectives computed exactly in the local search; all
    others are predicted by the surrogate.

    Hand-driven ask/tell loop (the cluster driver)::

        algorithm = HAMP()
        algorithm.setup(problem, termination=("n_evals", budget), seed=seed)
        while algorithm.has_next():
            pop = algorithm.ask()                       # never more than the budget has left
            F, ok = evaluate_somewhere(pop.get("X"))    # integer problems: X is int
            pop.set("F", F)
            mark_failed(pop, ~ok)                       # failed candidates: never selected
            algorithm.tell(infills=pop)
            checkpoint = pickle.dumps(algorithm)        # resuming from it is exact
        result = algorithm.result()                     # .X, .F: the archive's front

    pymoo does not count evaluations made outside ``minimize``; ``tell`` counts them in
    ``n_real_evals`` (failed ones included) and copies the count into ``evaluator.n_eval``, so an
    ``("n_evals", N)`` termination stops both loops after exactly N evaluations. Failed candidates
    are told back with :func:`~prunesearch.search.base.mark_failed` (or with NaN objectives, or
    with a constraint violation on a problem without constraints).

    After every ``tell``: ``last_operator`` names the selection operator used, ``history_log``
    gains a dict (generation, operator, credits, probabilities, hypervolume, local-search
    counts), and every candidate of the batch carries ``origin`` (``initial``, ``variation`` or
    ``local_search``).

    Args:
        pop_size: Population size kept by environmental selection (and initial batch size).
        n_offsprings: Offspring of variation per generation (default ``pop_size``).
        portfolio: Selection operators to choose among (``nsga2``, ``sms-emoa``, ``spea2``,
            ``ibea``); one name disables the portfolio.
        credit_window: How many recent credits of an operator are averaged.
        min_probability: Probability floor of each operator.
        local_search: Local-search budgets (parents, samples_per_parent, moves_per_parent,
            max_moves); ``max_moves=0`` disables the local search.
        surrogate: ``random_forest`` (default) or ``gaussian_process`` (expected HV improvement).
        surrogate_options: Keyword arguments for the surrogate's constructor (e.g. ``n_trees``).
        initial_keep_ratios: Integer problems only: uniform genomes ``xl + r (xu - xl)`` seeded
            into the initial population (1.0 is the full-width genome). None (default) seeds
            :data:`DEFAULT_KEEP_RATIOS` on pruning genomes (a
            :class:`~prunesearch.search.problems.GenomeProblem`) and nothing elsewhere: on
            discretised ZDT2 the seeds took over the population (median HV 0.69x NSGA-II's);
            ``()`` disables it, a tuple forces it on any integer problem.
        step_fraction: Real genes: local-search step (standard deviation) as a range fraction.
        min_archive_for_surrogate: Local search starts once this many evaluations succeeded.
        expected_improvement_samples: Samples per candidate for expected HV improvement (GP).
        parent_selection: How local-search parents are drawn from the archive's front:
            ``crowding`` (default: least crowded first, extremes included; better than
            ``random`` on 5 of 7 benchmark problems, 5 seeds) or ``random`` (uniformly).
        cheap_features: Also feed the exact cheap objectives (scaled) to the surrogate, as
            the HAMP paper suggests (FLOPs/parameter ratio). Default on: on the synthetic
            problem it raised HAMP/NSGA-II from 1.012 to 1.028 without seeding (10 seeds).
        adaptive_local_search: Scale the number of local-search moves per generation by how
            much front hypervolume a local-search evaluation adds compared with an offspring
            (exclusive contributions, averaged over ``credit_window`` generations); between 2
            and ``local_search.max_moves``. Default on: it raised HAMP/NSGA-II on all seven
            ZDT/DTLZ variants tried (10 seeds); without it the local search cost HV there.
        adaptive_prescreen: Let the pre-screening earn its share of the offspring: each batch
            holds offspring the surrogate chose and offspring drawn at random from the same
            bred pool, a controlled experiment; the probability that a chosen one beats a
            random one (each scored against the front before the batch, averaged over
            ``credit_window`` generations) sets the chosen count between one (no better than
            chance) and ``1 - local_search.explore_fraction`` of the offspring (0.75 or more).
            Default on (docs/METHODS.md: with the batch check below it fixed ZDT2/ZDT3).
        feasibility_threshold: On a problem with constraints, set it (e.g. 0.1) to fit a
            random-forest classifier of feasibility on the archive with the objectives'
            surrogate and rule out of the pre-screen and the local search every candidate whose
            predicted probability of feasibility is below it: their predicted objectives are
            moved past the reference point, so they are chosen only when nothing predicted
            feasible is left. None (default): off. Measured (docs/BENCHMARKS.md): at 0.1 it
            raised HAMP/NSGA-II on OSY from 1.05 to 1.33 and on TNK from 0.97 to 1.04, and
            lowered it on C2-DTLZ2 from 1.19 to 1.01 (8 seeds), so it is not the default.
            No effect on problems without constraints.
        crossover_prob: SBX probability.
        crossover_eta: SBX distribution index.
        mutation_eta: Polynomial mutation distribution index.
        **kwargs: Passed to pymoo's ``Algorithm`` (``output``, ``verbose``, ...).
    """

    operator_name = "initial"

    #: Training-set caps of the random forest (``max_points``, ``max_samples``) that the
    #: asynchronous mode sets (:class:`~.steady_state.SteadyState`): it refits at every ask,
    #: about twice per population's worth of results, so an uncapped refit grows with the
    #: archive until it saturates the driver. None (generational mode, and states pickled
    #: before the caps existed): uncapped. The user's ``surrogate_options`` win over these.
    surrogate_caps: dict[str, int] | None = None
    #: Refit the surrogate only once this many more evaluations succeeded since its last fit
    #: (the asynchronous mode sets ``pop_size``: the generational mode's cadence, one fit per
    #: population's worth of results, where an ask per half population would refit twice as
    #: often). None (generational mode, older states): a fresh fit at every ask. The fitted
    #: model is never pickled: what a fit used (archive rows, seed) is, so a resumed search
    #: refits exactly the same one.
    surrogate_refit_every: int | None = None
    _surrogate_fit: dict[str, int] | None = None
    #: See the ``feasibility_threshold`` argument (None: states pickled before it existed).
    feasibility_threshold: float | None = None

    def __init__(
        self,
        *,
        pop_size: int = 20,
        n_offsprings: int | None = None,
        portfolio: Sequence[str] = ("nsga2", "sms-emoa", "spea2", "ibea"),
        credit_window: int = 5,
        min_probability: float = 0.05,
        local_search: LocalSearchSettings | None = None,
        surrogate: str = "random_forest",
        surrogate_options: dict[str, Any] | None = None,
        initial_keep_ratios: Sequence[float] | None = None,
        step_fraction: float = 0.05,
        min_archive_for_surrogate: int = 10,
        expected_improvement_samples: int = 16,
        parent_selection: str = "crowding",
        cheap_features: bool = True,
        adaptive_local_search: bool = True,
        adaptive_prescreen: bool = True,
        feasibility_threshold: float | None = None,
        crossover_prob: float = 0.9,
        crossover_eta: float = 15.0,
        mutation_eta: float = 20.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if pop_size < 4:
            raise ValueError(f"pop_size must be >= 4, got {pop_size!r}")
        if n_offsprings is not None and n_offsprings < 1:
            raise ValueError(f"n_offsprings must be >= 1 or None, got {n_offsprings!r}")
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate {surrogate!r} is unknown; valid: {', '.join(SURROGATES)}")
        ratios = None if initial_keep_ratios is None else tuple(map(float, initial_keep_ratios))
        if ratios is not None and any(not 0.0 <= r <= 1.0 for r in ratios):
            raise ValueError(f"initial_keep_ratios must lie in [0, 1], got {ratios!r}")
        if not 0.0 < step_fraction <= 1.0:
            raise ValueError(f"step_fraction must be in (0, 1], got {step_fraction!r}")
        if min_archive_for_surrogate < 2:
            raise ValueError(f"min_archive_for_surrogate must be >= 2, got "
                             f"{min_archive_for_surrogate!r}")
        if expected_improvement_samples < 1:
            raise ValueError(f"expected_improvement_samples must be >= 1, got "
                             f"{expected_improvement_samples!r}")
        if not 0.0 <= crossover_prob <= 1.0:
            raise ValueError(f"crossover_prob must be in [0, 1], got {crossover_prob!r}")
        self.pop_size = pop_size
        self.n_offsprings = n_offsprings or pop_size
        self.local_search = local_search or LocalSearchSettings()
        self.surrogate_name = surrogate
        self.surrogate_options = dict(surrogate_options or {})
        make_surrogate(surrogate, **self.surrogate_options)  # validates the options now
        self.initial_keep_ratios = ratios
        self.step_fraction = step_fraction
        self.min_archive_for_surrogate = min_archive_for_surrogate
        self.expected_improvement_samples = expected_improvement_samples
        if parent_selection not in ("random", "crowding"):
            raise ValueError(f"parent_selection must be 'random' or 'crowding', got "
                             f"{parent_selection!r}")
        self.parent_selection = parent_selection
        self.cheap_features = bool(cheap_features)
        self.adaptive_local_search = bool(adaptive_local_search)
        self.adaptive_prescreen = bool(adaptive_prescreen)
        if feasibility_threshold is not None and not 0.0 < feasibility_threshold < 1.0:
            raise ValueError(f"feasibility_threshold must be in (0, 1) or None, got "
                             f"{feasibility_threshold!r}")
        self.feasibility_threshold = feasibility_threshold
        self.crossover_prob = crossover_prob
        self.crossover_eta = crossover_eta
        self.mutation_eta = mutation_eta
        # Built (and validated) now, rebuilt empty in _setup for every run.
        self.portfolio = Portfolio(portfolio, window=credit_window,
                                   min_probability=min_probability)
        # pymoo's binary_tournament reads this: feasibility, then rank, then crowding.
        self.tournament_type = "comp_by_rank_and_crowding"

    def __getstate__(self) -> dict[str, Any]:
        # A fitted surrogate is a cache (rebuilt from _surrogate_fit), never checkpointed.
        state = self.__dict__.copy()
        state.pop("_surrogate_cache", None)
        return state

    # ----------------------------------------------------------------------------- setup
    def _setup(self, problem, **kwargs) -> None:
        if problem.n_obj < 2:
            raise ValueError(f"HAMP needs a multi-objective problem, got n_obj={problem.n_obj}")
        if isinstance(getattr(problem, "vars", None), dict):
            raise ValueError("HAMP searches integer or real vectors (n_var, xl, xu); this problem "
                             "declares mixed variables (vars=...): encode each Choice as an "
                             "Integer index and pass n_var, xl, xu, vtype instead")
        if not problem.has_bounds():
            raise ValueError("HAMP needs bounded variables (problem.xl and problem.xu)")
        self._init_archive(problem)
        self.xl, self.xu = (np.asarray(b, dtype=float) for b in problem.bounds())
        if self.integer:
            self.sampling = IntegerRandomSampling()
            crossover = SBX(prob=self.crossover_prob, eta=self.crossover_eta, vtype=float,
                            repair=RoundingRepair())
            mutation = PM(eta=self.mutation_eta, vtype=float, repair=RoundingRepair())
        else:
            self.sampling = FloatRandomSampling()
            crossover = SBX(prob=self.crossover_prob, eta=self.crossover_eta)
            mutation = PM(eta=self.mutation_eta)
        self.mating = Mating(TournamentSelection(func_comp=binary_tournament), crossover,
                             mutation, eliminate_duplicates=self.known_genomes,
                             n_max_iterations=100)
        self.portfolio = Portfolio(self.portfolio.names, window=self.portfolio.window,
                                   min_probability=self.portfolio.min_probability)
        self.pending_operator: str | None = None
        self.origin_credits: dict[str, list[float]] = {"variation": [], "local_search": []}
        # Pre-screening's record: per generation, P(chosen offspring beats a random one).
        self.prescreen_credits: list[float] = []
        self._screened: dict[str, set] = {"chosen": set(), "random": set()}
        # The surrogate's out-of-sample record: per generation, rank correlation of predicted
        # and real expensive objectives over the whole told batch.
        self.batch_correlations: list[float] = []
        self._batch_predictions: dict = {}
        cheap = tuple(int(i) for i in getattr(problem, "cheap_objectives", ()) or ())
        self.cheap_objectives = cheap if hasattr(problem, "evaluate_cheap") else ()
        self.expensive_objectives = tuple(i for i in range(problem.n_obj)
                                          if i not in self.cheap_objectives)
        ref = getattr(problem, "hv_ref", None)
        self.hv_ref = None if ref is None else np.asarray(ref, dtype=float)

    # --------------------------------------------------------------------- initialisation
    def _initialize_infill(self) -> Population:
        seeds = []
        if self.integer:
            ratios = self.initial_keep_ratios
            if ratios is None:
                ratios = DEFAULT_KEEP_RATIOS if isinstance(self.problem, GenomeProblem) else ()
            for r in ratios:
                seeds.append(np.rint(self.xl + r * (self.xu - self.xl)))
        pop = Population.new(X=np.array(seeds)) if seeds else Population.empty()
        pop = self.known_genomes.do(pop) if len(pop) else pop
        pop = pop[: self.pop_size]
        pop.set("origin", "initial")
        rest = self._random_unknown(self.pop_size - len(pop), exclude=pop)
        rest.set("origin", "initial")
        return Population.merge(pop, rest)

    #: Asynchronous mode (``SteadyState(seeded_fillers=True)``): keep ratios of the uniform
    #: genomes that fill free evaluators while the initial population is incomplete, after the
    #: seeds of the initial population (midpoints of :data:`DEFAULT_KEEP_RATIOS`, then thinner).
    FILLER_KEEP_RATIOS: tuple[float, ...] = (0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25,
                                             0.2, 0.15, 0.1)

    def filler_genomes(self, n: int) -> Population:
        """Up to ``n`` seeded uniform genomes not yet known (pruning genomes only, where the
        initial population is seeded; otherwise none): the next keep ratios of
        :attr:`FILLER_KEEP_RATIOS`. Deterministic (no random draw)."""
        ratios = self.initial_keep_ratios
        if ratios is None:
            ratios = DEFAULT_KEEP_RATIOS if isinstance(self.problem, GenomeProblem) else ()
        if not self.integer or not ratios or n <= 0:
            return Population.empty()
        out = []
        key = self.known_genomes.key
        for r in self.FILLER_KEEP_RATIOS:
            x = np.rint(self.xl + r * (self.xu - self.xl))
            k = key(x)
            if k not in self.known_genomes.known and all(key(y) != k for y in out):
                out.append(x)
            if len(out) >= n:
                break
        return Population.new(X=np.array(out)) if out else Population.empty()

    def filler_moves(self, held: Population, n: int) -> Population:
        """Asynchronous mode (``SteadyState(bred_fillers=True)``): up to ``n`` unknown
        neighbour moves (:func:`~.local_search.neighbour_moves`, no surrogate) of the
        non-dominated feasible results held so far, their parents taken in turn; none while
        fewer than two results are held."""
        if not len(held) or n <= 0:
            return Population.empty()
        F = np.asarray(held.get("F"), dtype=float)
        X = np.asarray(held.get("X"), dtype=float)
        ok = np.array([not bool(ind.get("failed")) and np.all(np.isfinite(ind.F))
                       for ind in held])
        if ok.sum() < 2:
            return Population.empty()
        parents = np.flatnonzero(ok)[non_dominated(F[ok])]
        key = self.known_genomes.key
        taken = set(self.known_genomes.known)
        out = []
        turn = getattr(self, "_filler_turn", 0)
        for _ in range(4 * n):
            if len(out) >= n:
                break
            parent = X[parents[turn % len(parents)]]
            turn += 1
            for x in neighbour_moves(parent, xl=self.xl, xu=self.xu, integer=self.integer,
                                     n_samples=4, rng=self.random_state,
                                     step_fraction=self.step_fraction):
                if key(x) not in taken:
                    taken.add(key(x))
                    out.append(x)
                    break
        self._filler_turn = turn
        return Population.new(X=np.array(out)) if out else Population.empty()

    def _initialize_advance(self, infills=None, **kwargs) -> None:
        self.pop = self._ranked(infills if infills is not None else Population.empty())
        self.last_operator = "initial"
        self._log_generation(**self._hv_entries(), credits=self.portfolio.mean_credits(),
                             probabilities=self._probabilities())

    # ---------------------------------------------------------------------------- infill
    def _infill(self) -> Population | None:
        rng = self.random_state
        self._ls_stats: dict[str, Any] = {"ls_candidates": 0, "ls_moves": 0, "ls_fit_s": 0.0,
                                          "pool": 0, "rank_correlation": None,
                                          "surrogate_used": False}
        fitted = self._fit_surrogate()
        # The surrogate steers the batch only while it ranked the last batches well (out of
        # sample, where the search now is); it is still fitted, and the batch predicted, so that
        # the check can reopen.
        predictor = fitted if self._batch_gate_open() else None
        # Asynchronous mode (search/steady_state.py, believer=True): candidates in flight count
        # as evaluated at their predicted objectives when this batch is ranked.
        pending = getattr(self, "pending_X", None)
        self._pending_predicted = None
        if predictor is not None and pending is not None and len(pending):
            believed, _ = predictor(pending)
            self._pending_predicted = believed[non_dominated(believed)]
        self._ls_stats["batch_rank_correlation"] = (
            float(np.mean(self.batch_correlations)) if self.batch_correlations else None)
        pool = self.local_search.offspring_pool if predictor is not None else 1
        if len(self.pop) >= 2:
            off = self.mating.do(self.problem, self.pop, self.n_offsprings * pool,
                                 algorithm=self, random_state=rng)
        else:
            # Every candidate so far failed (or nearly): restart from random genomes.
            off = self._random_unknown(self.n_offsprings)
        # Offspring beyond the problem's limits are repaired now, before the pre-screen ranks
        # them, so that what is screened, predicted and credited is the genome evaluated
        # (infill's repair then finds none).
        off = self.repair_to_limits(off)
        off_screened = predictor is not None and len(off) > self.n_offsprings
        if off_screened:
            off = self._prescreen(off, predictor)
        off.set("origin", "variation")
        moves = (self._local_search_moves(exclude=off, predictor=predictor)
                 if predictor is not None else Population.empty())
        batch = Population.merge(moves, off)
        if len(batch) == 0:
            batch = self._random_unknown(self.n_offsprings)
            batch.set("origin", "variation")
        if len(batch) == 0:
            # The whole (finite) space has been evaluated.
            self.termination.force_termination = True
            return None
        if fitted is not None and self.expensive_objectives:
            X = np.asarray(batch.get("X"), dtype=float)
            known = [ind.get("predicted_F") for ind in batch]
            if all(p is not None for p in known):
                # Pre-screened and local-search members were predicted by this very model
                # already (a forest predicts each row alike whatever rows come with it).
                predicted = np.asarray(list(known), dtype=float).reshape(len(X), -1)
            else:
                predicted, _ = fitted(X)
            key = self.known_genomes.key
            new = {key(x): p for x, p in zip(X, predicted)}
            if getattr(self, "accumulate_credits", False):
                self._batch_predictions.update(new)  # async: told over several tells
            else:
                self._batch_predictions = new
        if getattr(self, "aligned_credits", False):
            # Asynchronous mode: what bred this ask, credited when its own results are told
            # (open_ask_record, _credit_asks).
            screened = self._screened if off_screened else {"chosen": set(), "random": set()}
            self._infill_stash = {
                "operator": self.pending_operator, "screened": screened,
                "predictions": (dict(self._batch_predictions)
                                if fitted is not None and self.expensive_objectives else {})}
            self._screened = {"chosen": set(), "random": set()}
            self._batch_predictions = {}
        return batch

    def _batch_gate_open(self) -> bool:
        """Whether the surrogate's out-of-sample ranking of the last batches is good enough."""
        if not self.batch_correlations:
            return True
        threshold = self.local_search.min_batch_rank_correlation
        return float(np.mean(self.batch_correlations)) >= threshold

    def _credit_batch_predictions(self) -> None:
        """Spearman correlation of the last batch's predicted and real expensive objectives."""
        if getattr(self, "accumulate_credits", False):
            rows = self._accumulated_prediction_rows()
        else:
            predictions, self._batch_predictions = self._batch_predictions, {}
            n = self._last_batch_size
            if n == 0 or not predictions:
                return
            start = len(self.archive_F) - n
            key = self.known_genomes.key
            rows = [(i, predictions[key(x)]) for i, x in enumerate(self.archive_X[start:], start)
                    if key(x) in predictions and self.archive_feasible[i]]
        self._score_predictions(rows)

    def _score_predictions(self, rows: list) -> None:
        """Record the rank correlation of predicted and real objectives over ``rows``
        ((archive index, predicted objectives) pairs; fewer than 5: nothing)."""
        if len(rows) < 5:
            return
        idx = np.array([i for i, _ in rows])
        P = np.array([p for _, p in rows])
        values = []
        for j in self.expensive_objectives:
            real = self.archive_F[idx, j]
            if np.ptp(real) > 0 and np.ptp(P[:, j]) > 0:
                values.append(float(spearmanr(P[:, j], real).statistic))
        if values:
            self.batch_correlations.append(float(np.mean(values)))
            excess = len(self.batch_correlations) - self.portfolio.window
            del self.batch_correlations[: max(0, excess)]

    def _accumulated_prediction_rows(self) -> list:
        """Asynchronous mode: predicted rows of the told group join those of earlier groups
        until one ask's worth (at least 5) is in; then they are scored together."""
        n = self._last_batch_size
        start = len(self.archive_F) - n
        key = self.known_genomes.key
        pending = getattr(self, "_prediction_rows", [])
        for i, x in enumerate(self.archive_X[start:], start):
            p = self._batch_predictions.pop(key(x), None)
            if p is not None and self.archive_feasible[i]:
                pending.append((i, p))
        if len(pending) < max(5, self.n_offsprings):
            self._prediction_rows = pending
            return []
        self._prediction_rows = []
        return pending

    # ------------------------------------------------------- asynchronous: per-ask records
    def open_ask_record(self, pop: Population) -> None:
        """Asynchronous mode (``aligned_credits``): tag the candidates of the ask just made.

        ``pop`` is what the caller kept of the last ask (deduplicated, cut to its limit). The
        record holds the operator whose selection made the population they were bred from,
        which of them the pre-screen chose or drew at random, and their predicted objectives;
        :meth:`_credit_asks` fills it as they are told and closes it when all of them are.
        """
        stash, self._infill_stash = getattr(self, "_infill_stash", None), None
        if stash is None or not len(pop):
            return
        key = self.known_genomes.key
        keys = [key(x) for x in pop.get("X")]
        self._ask_number = getattr(self, "_ask_number", 0) + 1
        records = getattr(self, "_ask_records", {})
        owner = getattr(self, "_ask_of", {})
        records[self._ask_number] = {
            "operator": stash["operator"], "size": len(keys), "told": 0, "gain": 0.0,
            "indices": [], "rows": [], "scores": {"chosen": [], "random": []},
            "screened": {label: set(keys) & members
                         for label, members in stash["screened"].items()},
            "predictions": {k: stash["predictions"][k] for k in keys
                            if k in stash["predictions"]}}
        for k in keys:
            owner[k] = self._ask_number
        self._ask_records, self._ask_of = records, owner

    def _credit_asks(self) -> list[dict[str, Any]]:
        """Score the told group's candidates against the front before the group, by the ask
        that bred them; close every ask now fully told. Returns the closed asks' credits.

        A closed ask credits, as a generation does: its operator (portfolio) with the
        hypervolume its candidates added (summed over the groups they were told in, each
        against the front before that group), the pre-screen with the AUC of its chosen vs
        random offspring, the surrogate with the rank correlation over its candidates, and
        the local search with its per-origin front contributions.
        """
        records = getattr(self, "_ask_records", {})
        owner = getattr(self, "_ask_of", {})
        n = self._last_batch_size
        start = len(self.archive_F) - n
        key = self.known_genomes.key
        members: dict[int, list[int]] = {}
        for i in range(start, len(self.archive_F)):
            ask = owner.pop(key(self.archive_X[i]), None)
            if ask is not None and ask in records:
                members.setdefault(ask, []).append(i)
        if not members:
            return []
        shift, scale, ref = self._normaliser()
        ok = self.archive_feasible
        before = np.flatnonzero(ok[:start])
        front = (self.archive_F[before] - shift) / scale
        front = front[non_dominated(front)] if len(front) else front
        Fn = (self.archive_F[start:] - shift) / scale
        scores = improvement_scores(Fn, front, ref)
        scores[~ok[start:]] = -np.inf
        hv_before = hypervolume(front, ref) if len(front) else 0.0
        closed = []
        for ask in sorted(members):
            record, idx = records[ask], members[ask]
            record["told"] += len(idx)
            record["indices"].extend(idx)
            for i in idx:
                k = key(self.archive_X[i])
                for label, keys in record["screened"].items():
                    if k in keys:
                        record["scores"][label].append(float(scores[i - start]))
                p = record["predictions"].get(k)
                if p is not None and ok[i]:
                    record["rows"].append((i, p))
            good = [i - start for i in idx if ok[i]]
            if good:
                F = np.vstack([front, Fn[good]]) if len(front) else Fn[good]
                record["gain"] += hypervolume(F[non_dominated(F)], ref) - hv_before
            if record["told"] >= record["size"]:
                closed.append(self._close_ask(records.pop(ask)))
        return closed

    def _close_ask(self, record: dict[str, Any]) -> dict[str, Any]:
        a = np.array(record["scores"]["chosen"])
        b = np.array(record["scores"]["random"])
        auc = None
        if len(a) and len(b):
            auc = float(np.mean((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])))
            self.prescreen_credits.append(auc)
            del self.prescreen_credits[: max(0, len(self.prescreen_credits)
                                              - self.portfolio.window)]
        self._score_predictions(record["rows"])
        self._credit_origins(np.array(record["indices"], dtype=int))
        if record["operator"] is not None:
            self.portfolio.reward(record["operator"], record["gain"])
        return {"operator": record["operator"], "gain": record["gain"], "prescreen": auc}

    # ------------------------------------------------------------------------ surrogate
    def _surrogate_wanted(self) -> bool:
        ls = self.local_search
        local_search = ls.max_moves > 0 and ls.moves_per_parent > 0
        return local_search or ls.offspring_pool > 1

    def _fit_surrogate(self):
        """Fit this generation's surrogate; return ``predict(C) -> (objectives, std | None)``.

        None when surrogate assistance is off, the archive is too small, or the surrogate's
        held-out (out-of-bag) rank correlation is below ``local_search.min_rank_correlation``:
        a surrogate that cannot rank genomes would only steer the batch at random.
        """
        if not self._surrogate_wanted():
            return None
        n_ok = int((~self.archive_failed).sum())
        if n_ok < self.min_archive_for_surrogate or len(self.front_indices()) == 0:
            return None
        start = time.perf_counter()
        record = self._surrogate_fit
        if (self.surrogate_refit_every and record is not None
                and n_ok - record["n_ok"] < self.surrogate_refit_every):
            seed, rows = record["seed"], record["rows"]  # the last fit's, reused (or rebuilt)
        else:
            # (No draw without expensive objectives: nothing is fitted, as before the cadence.)
            seed = (int(self.random_state.integers(2**31 - 1)) if self.expensive_objectives
                    else 0)
            rows = len(self.archive_F)
            self._surrogate_fit = ({"n_ok": n_ok, "rows": rows, "seed": seed}
                                   if self.surrogate_refit_every else None)
        cached = getattr(self, "_surrogate_cache", None)
        if cached is not None and cached[0] == (rows, seed):
            fitted = cached[1]
        else:
            fitted = self._fit_surrogate_on(rows, seed)
            self._surrogate_cache = ((rows, seed), fitted) if self.surrogate_refit_every else None
        model, lo, span, corr = fitted
        self._ls_stats["rank_correlation"] = corr
        self._ls_stats["ls_fit_s"] = time.perf_counter() - start
        if corr is not None and corr < self.local_search.min_rank_correlation:
            return None
        self._ls_stats["surrogate_used"] = True
        return self._predictor(model, lo, span, self._fit_feasibility(rows, seed))

    def _fit_feasibility(self, rows: int, seed: int) -> Any:
        """A classifier of feasibility on the first ``rows`` archive rows (failed ones left
        out), or None: unconstrained problem, option off, or one class only so far."""
        if self.feasibility_threshold is None or not self.problem.has_constraints():
            return None
        ok = ~self.archive_failed[:rows]
        feasible = (self.archive_CV[:rows] <= 0.0)[ok]
        if feasible.all() or not feasible.any():
            return None
        from sklearn.ensemble import RandomForestClassifier

        classifier = RandomForestClassifier(n_estimators=50, random_state=seed, n_jobs=1)
        return classifier.fit(self._scale_genomes(self.archive_X[:rows][ok]), feasible)

    def _fit_surrogate_on(self, rows: int, seed: int) -> tuple[Any, Any, Any, float | None]:
        """The surrogate fitted on the first ``rows`` archive rows (failed ones left out) with
        ``random_state=seed``: ``(model, cheap-feature offset, cheap-feature span, held-out
        rank correlation)``; model None when every objective is cheap."""
        ok = ~self.archive_failed[:rows]
        cheap, exp = list(self.cheap_objectives), list(self.expensive_objectives)
        F_ok = self.archive_F[:rows][ok]
        lo = span = model = corr = None
        if exp:
            X_train = self._scale_genomes(self.archive_X[:rows][ok])
            if cheap and self.cheap_features:
                # The exact cheap objectives as extra inputs: a smooth summary of the widths
                # that tells the forest what a small move changes.
                lo = F_ok[:, cheap].min(axis=0)
                span = np.ptp(F_ok[:, cheap], axis=0)
                span = np.where(span > 0, span, 1.0)
                X_train = np.hstack([X_train, (F_ok[:, cheap] - lo) / span])
            options = dict(self.surrogate_options)
            if self.surrogate_caps and self.surrogate_name == "random_forest":
                options = {**self.surrogate_caps, **options}
            model = make_surrogate(self.surrogate_name, **options)
            with warnings.catch_warnings():
                # GP hyper-parameter fits warn about convergence on small archives; harmless.
                warnings.simplefilter("ignore")
                model.fit(X_train, F_ok[:, exp], random_state=seed)
            corr = getattr(model, "held_out_rank_correlation", None)
        return model, lo, span, corr

    def _predictor(self, model: Any, lo: Any, span: Any, feasibility: Any = None):
        """``predict(C) -> (objectives, std | None)`` of a fitted surrogate (cheap objectives
        exact); candidates ``feasibility`` predicts infeasible get objectives past the
        reference point (no predicted improvement)."""
        cheap, exp = list(self.cheap_objectives), list(self.expensive_objectives)
        n_obj = self.problem.n_obj

        def predict(C: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            t0 = time.perf_counter()
            C = np.asarray(C, dtype=float)
            predicted = np.empty((len(C), n_obj))
            std = None
            if cheap:
                predicted[:, cheap] = np.asarray(
                    self.problem.evaluate_cheap(C), dtype=float).reshape(len(C), -1)
            if model is not None:
                X_pred = self._scale_genomes(C)
                if lo is not None:
                    X_pred = np.hstack([X_pred, (predicted[:, cheap] - lo) / span])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mean, sd = model.predict(X_pred)
                predicted[:, exp] = mean
                if sd is not None:
                    std = np.zeros_like(predicted)
                    std[:, exp] = sd
            if feasibility is not None and len(C):
                column = list(feasibility.classes_).index(True)
                out = (feasibility.predict_proba(self._scale_genomes(C))[:, column]
                       < self.feasibility_threshold)
                if out.any():
                    shift, scale, ref = self._normaliser()
                    predicted[out] = shift + scale * (ref + 1.0)
                    if std is not None:
                        std[out] = 0.0
                # Summed over the generation's calls (pre-screen, local search).
                self._ls_stats["predicted_infeasible"] = (
                    self._ls_stats.get("predicted_infeasible", 0) + int(out.sum()))
            self._ls_stats["ls_fit_s"] += time.perf_counter() - t0
            return predicted, std

        return predict

    def _rank_batch(self, predicted: np.ndarray, std: np.ndarray | None, *, groups: np.ndarray,
                    per_group: int, total: int, believed: np.ndarray | None = None) -> list[int]:
        """Greedy predicted-HVI choice of up to ``total`` rows of ``predicted`` (raw units)."""
        shift, scale, ref = self._normaliser()
        pred_n = (predicted - shift) / scale
        front_n = (self.archive_F[self.front_indices()] - shift) / scale
        if believed is None and getattr(self, "_pending_predicted", None) is not None:
            believed = self._pending_predicted
        if believed is not None and len(believed):
            front_n = np.vstack([front_n, (believed - shift) / scale])
        samples = None
        if std is not None:
            # Expected HV improvement by Monte Carlo, with the same normal draws for every
            # candidate (common random numbers keep the ranking stable).
            z = self.random_state.standard_normal((self.expected_improvement_samples,
                                                   predicted.shape[1]))
            samples = pred_n[:, None, :] + (std / scale)[:, None, :] * z[None, :, :]
        return greedy_select(pred_n, front_n, ref, groups=groups, per_group=per_group,
                             total=total, samples=samples)

    def _prescreen(self, pool: Population, predictor) -> Population:
        """Keep ``n_offsprings`` of a bred pool: the best by predicted HVI, plus random ones.

        The exploit share is filled greedily by predicted hypervolume improvement over the
        archive's front (believer updates, as in the local search); ``explore_fraction`` of the
        batch is then drawn uniformly from the rest of the pool, so the surrogate's blind spots
        still get samples and its training set does not collapse onto its own predictions.
        """
        n = self.n_offsprings
        X = np.asarray(pool.get("X"), dtype=float)
        predicted, std = predictor(X)
        n_explore = n - self._prescreen_share(n)
        chosen = self._rank_batch(predicted, std, groups=np.zeros(len(X), dtype=int),
                                  per_group=n - n_explore, total=n - n_explore)
        rest = np.setdiff1d(np.arange(len(X)), chosen)
        k = min(n - len(chosen), len(rest))
        explore = self.random_state.choice(rest, size=k, replace=False) if k else []
        keep = np.concatenate([np.asarray(chosen, dtype=int), np.asarray(explore, dtype=int)])
        self._ls_stats.update(pool=len(X), prescreened=len(chosen))
        key = self.known_genomes.key
        screened = {"chosen": {key(x) for x in X[np.asarray(chosen, dtype=int)]},
                    "random": {key(x) for x in X[np.asarray(explore, dtype=int)]}}
        if getattr(self, "accumulate_credits", False):
            for label, keys in screened.items():  # async: told over several tells
                self._screened[label].update(keys)
        else:
            self._screened = screened
        out = pool[keep]
        out.set("predicted_F", predicted[keep])
        return out

    def _prescreen_share(self, n: int) -> int:
        """Offspring of ``n`` chosen by the surrogate this generation (the rest: random)."""
        high = n - round(self.local_search.explore_fraction * n)
        low = min(1, high)  # one chosen offspring keeps the experiment running
        if not self.adaptive_prescreen or not self.prescreen_credits or low >= high:
            return max(0, high)
        # P(chosen beats random): 0.5 = no better than chance -> one; 0.75 or more -> the
        # full share; linear in between.
        edge = float(np.clip((np.mean(self.prescreen_credits) - 0.5) / 0.25, 0.0, 1.0))
        return int(round(low + edge * (high - low)))

    def _credit_prescreen(self) -> float | None:
        """Score last batch's chosen offspring against its random ones (Mann-Whitney AUC).

        Each is scored against the feasible front archived before the batch: its hypervolume
        improvement, or minus its distance behind the front (failed ones lowest), the ranking
        score the surrogate itself uses, here on real objectives.
        """
        if getattr(self, "accumulate_credits", False):
            return self._credit_prescreen_accumulated()
        screened, self._screened = self._screened, {"chosen": set(), "random": set()}
        n = self._last_batch_size
        if n == 0 or not screened["chosen"] or not screened["random"]:
            return None
        start = len(self.archive_F) - n
        key = self.known_genomes.key
        groups = [key(x) for x in self.archive_X[start:]]
        chosen = np.array([k in screened["chosen"] for k in groups])
        random_ = np.array([k in screened["random"] for k in groups])
        if not chosen.any() or not random_.any():
            return None
        shift, scale, ref = self._normaliser()
        before = np.flatnonzero(self.archive_feasible[:start])
        front = self.archive_F[before]
        front = front[non_dominated(front)] if len(front) else front
        Fn = (self.archive_F[start:] - shift) / scale
        scores = improvement_scores(Fn, (front - shift) / scale, ref)
        scores[~self.archive_feasible[start:]] = -np.inf
        a, b = scores[chosen], scores[random_]
        auc = float(np.mean((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])))
        self.prescreen_credits.append(auc)
        del self.prescreen_credits[: max(0, len(self.prescreen_credits) - self.portfolio.window)]
        return auc

    def _credit_prescreen_accumulated(self) -> float | None:
        """Asynchronous mode: the told group's screened offspring are scored (against the front
        before the group) and pooled with earlier groups' until one ask's worth, holding both
        chosen and random ones, is in; then the AUC is credited as in a generation."""
        n = self._last_batch_size
        if n == 0:
            return None
        start = len(self.archive_F) - n
        key = self.known_genomes.key
        labels = []
        for x in self.archive_X[start:]:
            k = key(x)
            label = None
            for name in ("chosen", "random"):
                if k in self._screened[name]:
                    self._screened[name].discard(k)
                    label = name
            labels.append(label)
        if not any(labels):
            return None
        shift, scale, ref = self._normaliser()
        before = np.flatnonzero(self.archive_feasible[:start])
        front = self.archive_F[before]
        front = front[non_dominated(front)] if len(front) else front
        scores = improvement_scores((self.archive_F[start:] - shift) / scale,
                                    (front - shift) / scale, ref)
        scores[~self.archive_feasible[start:]] = -np.inf
        pool = getattr(self, "_prescreen_scores", {"chosen": [], "random": []})
        for label, score in zip(labels, scores):
            if label is not None:
                pool[label].append(float(score))
        self._prescreen_scores = pool
        a, b = np.array(pool["chosen"]), np.array(pool["random"])
        if len(a) + len(b) < self.n_offsprings or not len(a) or not len(b):
            return None
        self._prescreen_scores = {"chosen": [], "random": []}
        auc = float(np.mean((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])))
        self.prescreen_credits.append(auc)
        del self.prescreen_credits[: max(0, len(self.prescreen_credits) - self.portfolio.window)]
        return auc

    # ------------------------------------------------------------------------ local search
    def _local_search_moves(self, *, exclude: Population, predictor) -> Population:
        ls = self.local_search
        if ls.max_moves == 0 or ls.moves_per_parent == 0:
            return Population.empty()
        front = self.front_indices()
        rng = self.random_state
        parents = self._local_search_parents(front, ls.parents, rng)
        taken = set(self.known_genomes.known)
        taken.update(self.known_genomes.key(x) for x in (exclude.get("X") if len(exclude) else []))
        cands, groups = [], []
        for g, p in enumerate(parents):
            for x in neighbour_moves(self.archive_X[p], xl=self.xl, xu=self.xu,
                                     integer=self.integer, n_samples=ls.samples_per_parent,
                                     rng=rng, step_fraction=self.step_fraction):
                key = self.known_genomes.key(x)
                if key not in taken:
                    taken.add(key)
                    cands.append(x)
                    groups.append(g)
        if cands and getattr(self.problem, "limits", None):
            # Moves beyond the problem's limits are never ranked (their cheap objectives are
            # exact, so they are known to be out before any prediction).
            ok = self.problem.within_limits(np.array(cands))
            cands = [c for c, keep in zip(cands, ok) if keep]
            groups = [g for g, keep in zip(groups, ok) if keep]
        if not cands:
            return Population.empty()
        C = np.array(cands)
        predicted, std = predictor(C)
        chosen = self._rank_batch(predicted, std, groups=np.array(groups),
                                  per_group=ls.moves_per_parent, total=self._moves_budget())
        moves = Population.new(X=C[chosen]) if chosen else Population.empty()
        if chosen:
            moves.set("origin", "local_search", "predicted_F", predicted[chosen])
        self._ls_stats.update(ls_candidates=len(C), ls_moves=len(chosen),
                              ls_budget=self._moves_budget())
        return moves

    def _local_search_parents(self, front: np.ndarray, n: int,
                              rng: np.random.Generator) -> np.ndarray:
        """``n`` archive-front members whose neighbourhoods are searched."""
        if len(front) <= n:
            return front
        if self.parent_selection == "random":
            return rng.choice(front, size=n, replace=False)
        # "crowding": the least crowded members (extremes first), where the front is thinnest.
        shift, scale, _ = self._normaliser()
        crowding = calc_crowding_distance((self.archive_F[front] - shift) / scale)
        order = np.lexsort((rng.random(len(front)), -crowding))
        return front[order[:n]]

    def _scale_genomes(self, X: np.ndarray) -> np.ndarray:
        span = np.where(self.xu - self.xl > 0, self.xu - self.xl, 1.0)
        return (np.asarray(X, dtype=float) - self.xl) / span

    def _normaliser(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shift, scale, ref) of the objective space in which HV is compared.

        With the problem's ``hv_ref``: divide by it, reference 1.0 (the benchmark's measure).
        Otherwise: the ideal and nadir of the archive's front, reference 1.1 on every axis.
        """
        n_obj = self.problem.n_obj
        if self.hv_ref is not None:
            return np.zeros(n_obj), self.hv_ref, np.ones(n_obj)
        front = self.front_indices()
        if len(front) == 0:
            return np.zeros(n_obj), np.ones(n_obj), np.full(n_obj, 1.1)
        F = self.archive_F[front]
        ideal, nadir = F.min(axis=0), F.max(axis=0)
        return ideal, np.where(nadir - ideal > 0, nadir - ideal, 1.0), np.full(n_obj, 1.1)

    # --------------------------------------------------------------------------- advance
    def _advance(self, infills=None, **kwargs) -> None:
        infills = infills if infills is not None else Population.empty()
        aligned = getattr(self, "aligned_credits", False)
        if aligned:
            # Asynchronous mode: every record (portfolio credit included) goes to the ask
            # that bred the told candidates, once all of that ask is told.
            closed = self._credit_asks()
            prescreen_credit = next((c["prescreen"] for c in reversed(closed)
                                     if c["prescreen"] is not None), None)
        else:
            self._credit_origins()
            prescreen_credit = self._credit_prescreen()
            self._credit_batch_predictions()
        cut_every = getattr(self, "cut_every", None)
        if cut_every:
            # Asynchronous mode: told groups join the population uncut until ``cut_every``
            # results are in; then one operator cuts it back, as a generation does.
            self._uncut = getattr(self, "_uncut", 0) + len(infills)
            self._cut_start = getattr(self, "_cut_start", len(self.archive_F) - len(infills))
            if self._uncut < cut_every:
                self.pop = self._ranked(Population.merge(self.pop, infills))
                return
            self._last_batch_size, since = len(self.archive_F) - self._cut_start, \
                self._last_batch_size
            entries = self._hv_entries()
            self._last_batch_size = since
            self._uncut, self._cut_start = 0, len(self.archive_F)
        else:
            entries = self._hv_entries()
        credit = None
        rewarded = self.pending_operator
        if aligned:
            rewarded = [c["operator"] for c in closed if c["operator"] is not None] or None
            credit = ([c["gain"] for c in closed if c["operator"] is not None] or None)
        elif rewarded is not None:
            credit = entries["hv"] - entries["hv_before"]
            self.portfolio.reward(self.pending_operator, credit)
        name = self.portfolio.choose(self.random_state)
        merged = Population.merge(self.pop, infills)
        survivors = self.portfolio.selectors[name].do(
            self.problem, merged, n_survive=self.pop_size, algorithm=self,
            random_state=self.random_state)
        self.pop = self._ranked(survivors)
        self.last_operator = name
        self.pending_operator = name
        self._log_generation(**entries, credit=credit, rewarded=rewarded,
                             credits=self.portfolio.mean_credits(),
                             probabilities=self._probabilities(),
                             prescreen_credit=prescreen_credit,
                             **getattr(self, "_ls_stats", {}))

    def _moves_budget(self) -> int:
        """Local-search moves allowed this generation."""
        cap = self.local_search.max_moves
        ls, var = self.origin_credits["local_search"], self.origin_credits["variation"]
        if not self.adaptive_local_search or not ls or not var:
            return cap
        mean_ls, mean_var = float(np.mean(ls)), float(np.mean(var))
        ratio = 1.0 if mean_var <= 0 else mean_ls / mean_var
        return int(np.clip(round(cap * ratio), min(2, cap), cap))

    def _credit_origins(self, indices: np.ndarray | None = None) -> None:
        """Mean exclusive front-HV contribution per evaluation, by origin, of the last batch
        (or of the archive rows ``indices``: one ask, in asynchronous mode)."""
        n = self._last_batch_size
        start = len(self.archive_F) - n
        if indices is None:
            origins = np.array(self.archive_origin[start:])
        else:
            n = len(indices)
            origins = np.array([self.archive_origin[i] for i in indices])
        if n == 0 or not np.any(origins == "local_search"):
            return
        shift, scale, ref = self._normaliser()
        front = self.front_indices()
        Fn = (self.archive_F[front] - shift) / scale
        inside = np.all(Fn < ref, axis=1)
        contrib = np.zeros(len(self.archive_F))
        batch_rows = (np.arange(start, len(self.archive_F)) if indices is None
                      else np.asarray(indices, dtype=int))
        if inside.any():
            # Only the batch's front members: the other contributions are never read.
            members = front[inside]
            wanted = np.flatnonzero(np.isin(members, batch_rows))
            contrib[members] = hv_contributions(Fn[inside], ref=ref, rows=wanted)
        batch = contrib[batch_rows]
        for origin, history in self.origin_credits.items():
            mask = origins == origin
            if mask.any():
                history.append(float(batch[mask].mean()))
                del history[: max(0, len(history) - self.portfolio.window)]

    def _ranked(self, pop: Population) -> Population:
        """Set ``rank`` and ``crowding`` (read by the mating tournament) without removing any."""
        if len(pop) == 0:
            return pop
        return RankAndCrowding().do(self.problem, pop, n_survive=len(pop),
                                    random_state=self.random_state)

    def _probabilities(self) -> dict[str, float]:
        return dict(zip(self.portfolio.names, map(float, self.portfolio.probabilities())))

    def _hv_entries(self) -> dict[str, float]:
        """Archive-front hypervolume before and after the last told batch (same normalisation)."""
        shift, scale, ref = self._normaliser()
        ok = self.archive_feasible
        start = len(self.archive_F) - self._last_batch_size
        values = []
        for mask in (ok & (np.arange(len(ok)) < start), ok):
            F = (self.archive_F[mask] - shift) / scale
            values.append(hypervolume(F[non_dominated(F)], ref) if len(F) else 0.0)
        return {"hv_before": values[0], "hv": values[1]}
