"""Bookkeeping shared by every search algorithm: archive, budget, failures, duplicates.

Every algorithm of the registry (HAMP, its ablations, NSGA-II, random search) mixes in
:class:`ArchivedSearch`, so the cluster driver treats them all alike:

* **Archive.** Every candidate told back is kept (genome, objectives, constraint violation,
  failed flag, generation, origin). The result (``algorithm.opt``, ``minimize(...).F``) is the
  feasible non-dominated set of that archive, not of the last population.
* **Budget.** pymoo counts evaluations only when it evaluates them itself; a hand-driven ask/tell
  loop (the cluster driver) does not move ``algorithm.evaluator.n_eval``. Here every ``tell``
  counts its candidates in ``n_real_evals`` and copies the count into the evaluator, so an
  ``("n_evals", N)`` termination fires in both loops; ``ask()`` never returns more candidates than
  the budget has left, and ``has_next()`` is False once it is spent.
* **Failures.** A candidate whose evaluation failed (OOM, NaN, crash) is told back with
  :func:`mark_failed` (or with a non-finite objective, or with a constraint violation on a problem
  that has no constraints). It stays in the archive, so it is never proposed again, and is never
  selected, never learned from and never part of the result.
* **Duplicates.** :class:`KnownGenomeElimination` refuses offspring already in the archive or
  already in the batch being built.
* **Limits.** On a problem with limits on its cheap objectives (a latency or memory budget,
  :class:`~prunesearch.search.problems.GenomeProblem`), every asked genome beyond one is
  repaired to fit before it leaves ``ask``; a repaired genome that is already known (or twice
  in the batch) is dropped, so nothing is evaluated twice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.individual import calc_cv
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.termination.max_eval import MaximumFunctionCallTermination

from prunesearch.search.indicators import non_dominated

__all__ = [
    "FAILED_OBJECTIVE",
    "ArchivedSearch",
    "KnownGenomeElimination",
    "genome_key",
    "is_integer_problem",
    "mark_failed",
]

#: Objective value written into every objective of a failed candidate (finite, so that pymoo's
#: sorting never sees NaN; failed candidates are excluded from selection anyway).
FAILED_OBJECTIVE = 1e12


def is_integer_problem(problem: Problem) -> bool:
    """Whether ``problem`` has integer variables (its ``vtype`` is an integer type)."""
    vtype = getattr(problem, "vtype", None)
    try:
        return vtype is not None and np.issubdtype(np.dtype(vtype), np.integer)
    except TypeError:
        return False


def genome_key(x: np.ndarray, *, integer: bool) -> bytes:
    """Hashable identity of one genome (rounded for integer problems, exact for real ones)."""
    if integer:
        return np.rint(np.asarray(x, dtype=float)).astype(np.int64).tobytes()
    return np.asarray(x, dtype=np.float64).tobytes()


def mark_failed(pop: Population, mask: Any = None) -> Population:
    """Mark candidates of an asked batch as failed evaluations before telling them back.

    A failed candidate is infeasible: the algorithm keeps it in its archive (so it is never
    proposed again) but never selects it, never trains its surrogate on it and never returns it.
    Objectives that are missing or not finite are replaced by :data:`FAILED_OBJECTIVE`.

    Example::

        pop = algorithm.ask()
        pop.set("F", F)                      # rows of failed candidates may hold NaN
        mark_failed(pop, ~ok)                # ok: boolean array, one entry per candidate
        algorithm.tell(infills=pop)

    Args:
        pop: The population returned by ``ask()``.
        mask: Boolean array (one per candidate) or indices of the failed ones; all if None.

    Returns:
        ``pop`` itself, modified in place.
    """
    idx = np.arange(len(pop)) if mask is None else np.asarray(mask)
    if idx.dtype == bool:
        if len(idx) != len(pop):
            raise ValueError(f"mask has {len(idx)} entries for a batch of {len(pop)} candidates")
        idx = np.flatnonzero(idx)
    for i in idx:
        ind = pop[int(i)]
        ind.set("failed", True)
        if ind.F is not None:
            F = np.asarray(ind.F, dtype=float)
            ind.F = np.where(np.isfinite(F), F, FAILED_OBJECTIVE)
        ind.CV = np.array([1.0])
    return pop


class KnownGenomeElimination(DuplicateElimination):
    """pymoo duplicate elimination that also refuses genomes evaluated (or asked) before.

    Args:
        integer: Whether genomes are integer (compared after rounding) or real (exact).
    """

    def __init__(self, *, integer: bool) -> None:
        super().__init__()
        self.integer = integer
        self.known: set[bytes] = set()

    def key(self, x: np.ndarray) -> bytes:
        """The identity of genome ``x``."""
        return genome_key(x, integer=self.integer)

    def _do(self, pop, other, is_duplicate):
        X = pop.get("X")
        if other is None:
            # Against itself and the archive: the first occurrence of a new genome survives.
            seen: set[bytes] = set()
            for i, x in enumerate(X):
                k = self.key(x)
                if k in self.known or k in seen:
                    is_duplicate[i] = True
                seen.add(k)
        else:
            others = {self.key(x) for x in other.get("X")}
            for i, x in enumerate(X):
                if self.key(x) in others:
                    is_duplicate[i] = True
        return is_duplicate


class ArchivedSearch:
    """Mixin for pymoo ``Algorithm`` subclasses: archive, real-evaluation budget and failures.

    Put it first in the bases (``class X(ArchivedSearch, Algorithm)``). It overrides the public
    ``ask``/``tell`` path (``infill``, ``advance``, ``has_next``) and ``_set_optimum``; subclasses
    keep implementing pymoo's ``_setup/_initialize_infill/_infill/_advance`` hooks and receive
    only the candidates that did not fail.

    Attributes:
        n_real_evals: Candidates told back so far (failed ones included): the budget's counter.
        budget: Maximum number of real evaluations, read from an ``("n_evals", N)`` termination;
            None when the termination is of another kind.
        last_operator: Name of the selection operator used by the last ``tell``.
        history_log: One dict per generation (``generation``, ``operator``, ``n_real_evals``,
            and algorithm-specific entries).
    """

    #: Name reported in ``last_operator`` by algorithms without a portfolio.
    operator_name = "none"

    def _init_archive(self, problem: Problem) -> None:
        self.integer = is_integer_problem(problem)
        self.n_real_evals = 0
        self._last_batch_size = 0
        term = self.termination
        self.budget: int | None = (
            int(term.n_max_evals)
            if isinstance(term, MaximumFunctionCallTermination)
            and np.isfinite(term.n_max_evals)
            else None
        )
        self.last_operator = self.operator_name
        self.history_log: list[dict[str, Any]] = []
        n_var, n_obj = problem.n_var, problem.n_obj
        self.archive_X = np.empty((0, n_var))
        self.archive_F = np.empty((0, n_obj))
        self.archive_CV = np.empty(0)
        self.archive_failed = np.empty(0, dtype=bool)
        self.archive_generation = np.empty(0, dtype=int)
        self.archive_origin: list[str] = []
        self.known_genomes = KnownGenomeElimination(integer=self.integer)
        self._front_cache = None
        self.__dict__.pop("_opt_index", None)

    # ----------------------------------------------------------------------------- budget
    @property
    def remaining_budget(self) -> int | None:
        """Real evaluations left (None without an evaluation budget)."""
        if self.budget is None:
            return None
        return max(0, self.budget - self.n_real_evals)

    def has_next(self) -> bool:
        """False once the evaluation budget is spent, else pymoo's termination decides."""
        if self.budget is not None and self.n_real_evals >= self.budget:
            return False
        return super().has_next()

    def infill(self) -> Population | None:
        """pymoo's infill, cut to the remaining budget, integer genomes as ints, known recorded."""
        pop = super().infill()
        if pop is None:
            return None
        remaining = self.remaining_budget
        if remaining is not None and len(pop) > remaining:
            pop = pop[:remaining]
        if self.integer and len(pop):
            X = np.rint(np.asarray(pop.get("X"), dtype=float)).astype(int)
            pop.set("X", X)
        wanted = len(pop)
        pop = self.repair_to_limits(pop)
        for _ in range(3):  # repaired genomes that were known are replaced by new random ones
            if len(pop) >= wanted:
                break
            fill = self._random_unknown(wanted - len(pop), exclude=pop)
            if self.integer and len(fill):
                fill.set("X", np.rint(np.asarray(fill.get("X"), dtype=float)).astype(int))
            fill = self.repair_to_limits(fill)
            fill = self.known_genomes.do(fill, pop) if len(fill) and len(pop) else fill
            if not len(fill):
                break
            fill.set("origin", "initial" if not self.is_initialized else "variation")
            pop = Population.merge(pop, fill)
        # Asked genomes count as known at once: a later ask (e.g. after a resume that replays
        # the batch) must not propose them again.
        for x in pop.get("X") if len(pop) else []:
            self.known_genomes.known.add(self.known_genomes.key(x))
        return pop

    def repair_to_limits(self, pop: Population) -> Population:
        """``pop`` with genomes beyond the problem's limits repaired to fit (in place) and the
        repaired ones that are already known, or repeated in ``pop``, dropped. Unchanged on a
        problem without limits; deterministic given the algorithm's generator, which the
        problem's ``limit_repair="spread"`` draws from."""
        repair = getattr(self.problem, "repair_limits", None)
        if repair is None or not getattr(self.problem, "limits", None) or not len(pop):
            return pop
        X = np.asarray(pop.get("X"))
        R = repair(X, rng=self.random_state)
        changed = np.any(R != np.rint(X), axis=1)
        if not changed.any():
            return pop
        key = self.known_genomes.key
        keep, seen = [], set()
        for i, (ind, x) in enumerate(zip(pop, R)):
            if changed[i]:
                ind.X = x
                # What was predicted for the genome asked is not a prediction of this one.
                ind.set("predicted_F", None)
            k = key(x)
            if (changed[i] and k in self.known_genomes.known) or k in seen:
                continue
            seen.add(k)
            keep.append(i)
        return pop[keep] if len(keep) < len(pop) else pop

    def advance(self, infills: Population | None = None, **kwargs):
        """Record every told candidate in the archive, then advance on the non-failed ones."""
        if infills is not None:
            infills = self._record(infills)
        return super().advance(infills=infills, **kwargs)

    def _random_unknown(self, n: int, *, exclude: Population | None = None) -> Population:
        """Up to ``n`` random genomes that are neither archived nor in ``exclude``."""
        out = Population.empty()
        for _ in range(20):
            if len(out) >= n:
                break
            sample = self.sampling.do(self.problem, n - len(out), random_state=self.random_state)
            others = [p for p in (exclude, out) if p is not None and len(p)]
            sample = self.known_genomes.do(sample, *others)
            out = Population.merge(out, sample)
        return out[:n]

    # ---------------------------------------------------------------------------- archive
    def _record(self, infills: Population) -> Population:
        """Archive the told batch; return the candidates that did not fail."""
        problem = self.problem
        n_obj = problem.n_obj
        constrained = problem.has_constraints()
        n = len(infills)
        F = np.full((n, n_obj), FAILED_OBJECTIVE)
        CV = np.zeros(n)
        failed = np.zeros(n, dtype=bool)
        for i, ind in enumerate(infills):
            f = None if ind.F is None else np.asarray(ind.F, dtype=float).ravel()
            flagged = bool(ind.get("failed"))
            G = None if ind.G is None else np.asarray(ind.G, dtype=float).ravel()
            H = None if ind.H is None else np.asarray(ind.H, dtype=float).ravel()
            cv = max(float(np.ravel(ind.CV)[0]), float(np.ravel(calc_cv(G=G, H=H))[0]))
            missing = f is None or f.size != n_obj or not np.all(np.isfinite(f))
            # A problem without constraints has no other reason for a violation than a failure.
            if missing or not np.isfinite(cv) or (not constrained and cv > 0):
                flagged = True
            if flagged:
                cv = max(cv, 1.0)
                if f is not None and f.size == n_obj:
                    F[i] = np.where(np.isfinite(f), f, FAILED_OBJECTIVE)
            else:
                F[i] = f
            failed[i], CV[i] = flagged, cv
            ind.F = F[i].copy()
            ind.CV = np.array([cv])
            ind.set("failed", flagged)
        X = np.asarray(infills.get("X"), dtype=float).reshape(n, problem.n_var)
        for x in X:
            self.known_genomes.known.add(self.known_genomes.key(x))
        self.archive_X = np.vstack([self.archive_X, X])
        self.archive_F = np.vstack([self.archive_F, F])
        self.archive_CV = np.concatenate([self.archive_CV, CV])
        self.archive_failed = np.concatenate([self.archive_failed, failed])
        gen = self.n_iter if self.n_iter is not None else 1
        self.archive_generation = np.concatenate([self.archive_generation, np.full(n, gen)])
        self.archive_origin.extend(str(ind.get("origin") or "") for ind in infills)
        self.n_real_evals += n
        self._last_batch_size = n
        # pymoo's ("n_evals", N) termination reads the evaluator's counter; a hand-driven loop
        # never moves it, so it follows ours (in minimize() both are equal already).
        self.evaluator.n_eval = max(self.evaluator.n_eval, self.n_real_evals)
        return infills[np.flatnonzero(~failed)]

    @property
    def archive_feasible(self) -> np.ndarray:
        """Boolean mask of archived candidates that neither failed nor violate a constraint."""
        return (~self.archive_failed) & (self.archive_CV <= 0.0)

    def front_indices(self) -> np.ndarray:
        """Archive indices of the feasible non-dominated set (the result).

        The archive only grows (``_record`` appends), so the front is kept from one call to
        the next and updated with the rows added since: the non-dominated set of the old front
        and the new rows is the non-dominated set of the whole archive (dominance is
        transitive), at the cost of the front instead of the archive.
        """
        n = len(self.archive_F)
        cache = getattr(self, "_front_cache", None)
        if cache is not None and cache[0] == n:
            return cache[1].copy()
        start = cache[0] if cache is not None and cache[0] < n else 0
        candidates = np.arange(start, n)
        if start:
            candidates = np.concatenate([cache[1], candidates])
        feasible = candidates[self.archive_feasible[candidates]]
        if len(feasible) == 0:
            front = feasible
        else:
            # Equal objective vectors (noise-free duplicates of other genomes) are all kept:
            # each is a distinct genome a user may pick.
            front = np.sort(feasible[non_dominated(self.archive_F[feasible])])
        self._front_cache = (n, front)
        return front.copy()

    def _set_optimum(self) -> None:
        # pymoo reads ``opt`` after every advance (a tell, in asynchronous mode: dozens a
        # second). One pymoo Individual per front member is costly, so the members that were
        # on the front before keep theirs and only the new members are built.
        idx = self.front_indices()
        previous = self.__dict__.get("_opt_index")
        old = self.__dict__.get("opt")
        if previous is None or old is None or len(old) != len(previous) or not len(previous):
            keep_at = np.full(len(idx), -1)
        else:  # both index lists are sorted: a member's old position by binary search
            pos = np.minimum(np.searchsorted(previous, idx), len(previous) - 1)
            keep_at = np.where(previous[pos] == idx, pos, -1)
        new_rows = idx[keep_at < 0]
        X = self.archive_X[new_rows].astype(int) if self.integer else self.archive_X[new_rows]
        built = Population.new(X=X, F=self.archive_F[new_rows], CV=np.zeros((len(new_rows), 1)))
        members, fresh = [], iter(built)
        for k in keep_at:
            members.append(old[int(k)] if k >= 0 else next(fresh))
        self.opt = Population.create(*members) if members else Population.empty()
        self.__dict__["_opt_index"] = idx

    def _log_generation(self, **entries: Any) -> None:
        self.history_log.append(
            {"generation": int(self.n_iter or 1), "operator": self.last_operator,
             "n_real_evals": int(self.n_real_evals), **entries}
        )
