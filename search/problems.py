"""Problems for the search layer: a generic bounded-integer genome problem and the fixed
synthetic ResNet-56-like pruning benchmark.

The *cheap objectives* contract: a problem may expose
``cheap_objectives`` (indices into F) and ``evaluate_cheap(X) -> ndarray`` (n x len(cheap)), for
objectives that are computed rather than evaluated (table latency, memory). HAMP then predicts
only the remaining objectives with its surrogate.

*Limits on cheap objectives* (a device's latency or memory budget): a :class:`GenomeProblem`
built with ``limits`` declares the largest value each cheap objective may take. Since those
objectives are known before evaluating, no candidate beyond a limit is ever evaluated: every
algorithm of the search layer passes what it asks through :meth:`GenomeProblem.repair_limits`
(:meth:`~prunesearch.search.base.ArchivedSearch.infill`), which shrinks an over-limit genome's
widths uniformly towards the lower bound until it fits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from pymoo.core.problem import Problem

__all__ = [
    "BENCHMARK_PROBLEMS",
    "DiscretizedProblem",
    "GenomeProblem",
    "SyntheticPruningProblem",
    "benchmark_problem",
    "synthetic_pruning_error",
]


class GenomeProblem(Problem):
    """A bounded-integer pruning problem: genes are granules kept per prunable group.

    Args:
        lower: Inclusive lower bound per gene.
        upper: Inclusive upper bound per gene.
        n_obj: Number of objectives (error first, then the cheap ones).
        cheap_objectives: Indices of objectives computed by ``cheap_fn``.
        cheap_fn: Maps an (n, n_var) integer array to an (n, len(cheap_objectives)) array.
        expensive_fn: Optional (n, n_var) -> (n, n_obj - len(cheap)) evaluator for in-process
            use (tests, benchmarks). The cluster driver evaluates candidates itself and never
            calls ``_evaluate``.
        hv_ref: Optional reference point for the hypervolume in raw objective units.
        limits: Optional largest value per cheap objective (objective index -> limit): genomes
            beyond one are never evaluated (:meth:`repair_limits`). The genome of lower bounds
            must meet every limit (:class:`ValueError` otherwise).
        limit_repair: ``"spread"`` (default) or ``"boundary"``: where :meth:`repair_limits`
            puts a repaired genome on its shrinking path (see there).
    """

    #: Bisection steps of :meth:`repair_limits` (resolution 2**-12 of each gene's range).
    REPAIR_STEPS = 12
    #: ``limit_repair="spread"``: the share of repaired genomes moved inwards from the limit,
    #: and the least fraction of the largest fitting shrink factor they keep.
    SPREAD_SHARE = 0.5
    SPREAD_LOW = 0.4
    LIMIT_REPAIRS = ("spread", "boundary")

    def __init__(
        self,
        lower: Sequence[int],
        upper: Sequence[int],
        *,
        n_obj: int = 3,
        cheap_objectives: Sequence[int] = (1, 2),
        cheap_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        expensive_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        hv_ref: Sequence[float] | None = None,
        limits: Mapping[int, float] | None = None,
        limit_repair: str = "spread",
    ) -> None:
        lower = np.asarray(lower, dtype=int)
        upper = np.asarray(upper, dtype=int)
        if lower.shape != upper.shape or lower.ndim != 1:
            raise ValueError(f"lower/upper must be 1-D of equal length, got {lower.shape}, {upper.shape}")
        if np.any(lower > upper):
            raise ValueError("lower bound above upper bound for some gene")
        super().__init__(n_var=len(lower), n_obj=n_obj, xl=lower, xu=upper, vtype=int)
        self.cheap_objectives = tuple(int(i) for i in cheap_objectives) if cheap_fn else ()
        self._cheap_fn = cheap_fn
        self._expensive_fn = expensive_fn
        self.hv_ref = None if hv_ref is None else np.asarray(hv_ref, dtype=float)
        if limit_repair not in self.LIMIT_REPAIRS:
            raise ValueError(f"limit_repair must be one of {self.LIMIT_REPAIRS}, got "
                             f"{limit_repair!r}")
        self.limit_repair = limit_repair
        self.limits = self._check_limits(limits or {})

    def _check_limits(self, limits: Mapping[int, float]) -> dict[int, float]:
        out = {int(k): float(v) for k, v in limits.items()}
        if not out:
            return out
        unknown = sorted(set(out) - set(self.cheap_objectives))
        if unknown:
            raise ValueError(f"limits on objectives {unknown}, which are not cheap objectives "
                             f"(cheap: {list(self.cheap_objectives)})")
        bad = {k: v for k, v in out.items() if not (np.isfinite(v) and v > 0)}
        if bad:
            raise ValueError(f"limits must be finite and > 0, got {bad}")
        floor = self.evaluate_cheap(self.xl[None, :])[0]
        for k, limit in out.items():
            value = float(floor[self.cheap_objectives.index(k)])
            if value > limit:
                raise ValueError(f"objective {k}: limit {limit:g} is below {value:.4g}, the "
                                 "value of the narrowest genome (every gene at its lower "
                                 "bound): no genome meets it")
        return out

    def within_limits(self, X: np.ndarray) -> np.ndarray:
        """Boolean mask of the genomes ``X`` (n, n_var) that meet every limit (all without)."""
        X = np.atleast_2d(np.asarray(np.rint(X), dtype=int))
        ok = np.ones(len(X), dtype=bool)
        if not self.limits or not len(X):
            return ok
        cheap = self.evaluate_cheap(X)
        for k, limit in self.limits.items():
            ok &= cheap[:, self.cheap_objectives.index(k)] <= limit
        return ok

    def repair_limits(self, X: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """``X`` with every genome beyond a limit shrunk until it fits.

        An over-limit genome ``x`` becomes ``lower + floor(t * (x - lower))``: all widths
        shrink together, so the repaired genome keeps the proportions of the one asked.
        ``t_max``, the largest ``t`` in [0, 1] at which the result meets every limit, is found
        by bisection (:attr:`REPAIR_STEPS` steps). With ``limit_repair="boundary"`` (or no
        ``rng``) ``t = t_max``: every repaired genome lands on the limit. With ``"spread"``,
        a share :attr:`SPREAD_SHARE` of them, drawn with ``rng``, gets ``t = u * t_max`` with
        ``u ~ U(SPREAD_LOW, 1)``: the limit is where most over-limit offspring would land, and
        a front crowded there covers little of the budget's range. Genomes within the limits
        are returned unchanged. Deterministic given ``rng``'s state (resume replays it).
        """
        X = np.asarray(np.rint(X), dtype=int).reshape(-1, self.n_var)
        if not self.limits or not len(X):
            return X
        bad = np.flatnonzero(~self.within_limits(X))
        if not len(bad):
            return X
        lower = self.xl.astype(int)
        span = X[bad] - lower
        lo, hi = np.zeros(len(bad)), np.ones(len(bad))
        for _ in range(self.REPAIR_STEPS):
            mid = (lo + hi) / 2
            ok = self.within_limits(lower + np.floor(mid[:, None] * span).astype(int))
            lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
        out = X.copy()
        out[bad] = lower + np.floor(lo[:, None] * span).astype(int)
        if self.limit_repair == "spread" and rng is not None:
            # Both draws for every repaired genome, whatever is used (a fixed number of draws
            # per call keeps a replayed search on the same random stream).
            moved = rng.random(len(bad)) < self.SPREAD_SHARE
            inner = lower + np.floor((lo * rng.uniform(self.SPREAD_LOW, 1.0, len(bad)))[:, None]
                                     * span).astype(int)
            # A measured table need not rise with every width: an inner point that breaks a
            # limit keeps the boundary point.
            moved &= self.within_limits(inner)
            out[bad[moved]] = inner[moved]
        return out

    def evaluate_cheap(self, X: np.ndarray) -> np.ndarray:
        """Exact cheap objectives for integer genomes ``X`` (n, n_var)."""
        if self._cheap_fn is None:
            raise NotImplementedError("this problem declares no cheap objectives")
        X = np.atleast_2d(np.asarray(np.rint(X), dtype=int))
        return np.asarray(self._cheap_fn(X), dtype=float).reshape(len(X), len(self.cheap_objectives))

    def _evaluate(self, X, out, *args, **kwargs):
        if self._expensive_fn is None:
            raise NotImplementedError(
                "GenomeProblem without expensive_fn is evaluated by the cluster driver, not pymoo"
            )
        X = np.asarray(np.rint(X), dtype=int)
        expensive = np.asarray(self._expensive_fn(X), dtype=float).reshape(len(X), -1)
        F = np.empty((len(X), self.n_obj))
        exp_idx = [i for i in range(self.n_obj) if i not in self.cheap_objectives]
        F[:, exp_idx] = expensive
        if self.cheap_objectives:
            F[:, list(self.cheap_objectives)] = self.evaluate_cheap(X)
        out["F"] = F


from prunesearch.search.synthetic import (  # noqa: E402
    LOWER as _LOWER,
    UPPER as _UPPER,
    synthetic_cheap as _synthetic_cheap,
    synthetic_error as synthetic_pruning_error,
    synthetic_hv_ref,
)


class SyntheticPruningProblem(GenomeProblem):
    """ResNet-56-shaped synthetic pruning problem: 30 integer genes, 3 objectives.

    Genes 0-26 are block widths in 1..16 granules, 27-29 stage widths in 2..16. Error is
    expensive (with seeded Gaussian noise, sd 0.002); latency and memory are cheap. Its
    hypervolume reference point is error 0.30 and the full-width genome's latency and memory.
    ``limits`` as in :class:`GenomeProblem` (e.g. ``{1: 0.5 * ref[1]}``: half the full-width
    latency).
    """

    def __init__(self, *, noise: bool = True, limits: Mapping[int, float] | None = None,
                 limit_repair: str = "spread") -> None:
        self.noise = noise
        ref = synthetic_hv_ref()
        super().__init__(
            _LOWER, _UPPER, n_obj=3, cheap_objectives=(1, 2), cheap_fn=_synthetic_cheap,
            expensive_fn=self._errors, hv_ref=ref, limits=limits, limit_repair=limit_repair,
        )

    def _errors(self, X: np.ndarray) -> np.ndarray:
        return np.array([[synthetic_pruning_error(x, noise=self.noise)] for x in X])


# --- standard test problems for the search alone, real and discretised ---
class DiscretizedProblem(Problem):
    """A real-valued pymoo problem searched on an integer grid.

    Gene ``k`` in ``0 .. levels - 1`` maps to ``xl + (xu - xl) * k / (levels - 1)`` of the wrapped
    problem, so the optimiser sees a bounded integer (``vtype=int``) problem, like a pruning
    genome, while the objectives stay those of the original.

    Args:
        base: The real-valued problem (bounded).
        levels: Grid points per variable (>= 2); 21 gives steps of 5% of the range.
    """

    def __init__(self, base: Problem, *, levels: int = 21) -> None:
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels!r}")
        if not base.has_bounds():
            raise ValueError("base problem must have bounds to be discretised")
        self.base = base
        self.levels = levels
        super().__init__(n_var=base.n_var, n_obj=base.n_obj, n_ieq_constr=base.n_ieq_constr,
                         n_eq_constr=base.n_eq_constr, xl=np.zeros(base.n_var),
                         xu=np.full(base.n_var, levels - 1), vtype=int)
        self.hv_ref = getattr(base, "hv_ref", None)

    def to_real(self, X: np.ndarray) -> np.ndarray:
        """Map integer genomes to the wrapped problem's variables."""
        xl, xu = self.base.bounds()
        return xl + (xu - xl) * np.asarray(X, dtype=float) / (self.levels - 1)

    def _evaluate(self, X, out, *args, **kwargs):
        values = self.base.evaluate(self.to_real(np.rint(X)), return_as_dictionary=True)
        for key in ("F", "G", "H"):
            if values.get(key) is not None:
                out[key] = values[key]


#: Problem names understood by :func:`benchmark_problem` (``-int``: discretised, 21 levels).
BENCHMARK_PROBLEMS = ("synthetic", "zdt1", "zdt2", "zdt3", "dtlz2",
                      "zdt1-int", "zdt2-int", "zdt3-int", "dtlz2-int")


def benchmark_problem(name: str) -> Problem:
    """Build a benchmark problem by name (see :data:`BENCHMARK_PROBLEMS`).

    ZDT1-3 have 30 variables and 2 objectives, DTLZ2 10 variables and 3 objectives (pymoo's
    definitions). They declare no ``hv_ref``: comparisons normalise by the union of the fronts
    compared (:func:`~prunesearch.search.indicators.comparison_hypervolumes`).
    """
    from pymoo.problems import get_problem

    if name not in BENCHMARK_PROBLEMS:
        raise ValueError(f"unknown benchmark problem {name!r}; valid: "
                         + ", ".join(BENCHMARK_PROBLEMS))
    if name == "synthetic":
        return SyntheticPruningProblem()
    base_name = name.removesuffix("-int")
    base = get_problem(base_name, n_obj=3) if base_name == "dtlz2" else get_problem(base_name)
    return DiscretizedProblem(base) if name.endswith("-int") else base
