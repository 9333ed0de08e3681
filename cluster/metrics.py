"""Search progress as Ray metrics, so the dashboard's Grafana panels can show a running search.

Every metric carries the tag ``run`` (the run name), so several searches on one cluster stay
apart. Ray exports application metrics on each node's metrics endpoint with a ``ray_`` prefix
(``ray_prunesearch_generation{run="..."}``); counters gain Prometheus' ``_total`` suffix.

Metric names (without the ``ray_`` prefix):

==========================================  =======  ==========================================
``prunesearch_generation``                  gauge    last completed generation
``prunesearch_evaluations``                 counter  candidates evaluated (ok and failed)
``prunesearch_evaluations_failed``          counter  candidates recorded as failed
``prunesearch_hypervolume``                 gauge    hypervolume of the current front
``prunesearch_front_size``                  gauge    members of the current Pareto front
``prunesearch_evals_per_s``                 gauge    evaluation throughput of the last generation
``prunesearch_portfolio_operator``          gauge    1 for the operator HAMP's portfolio selected
                                                     last (tag ``operator``), 0 for the others
==========================================  =======  ==========================================

Trial-based methods (the Tune runner, :class:`TrialMetrics`), tagged ``run``:

==========================================  =======  ==========================================
``prunesearch_trials_running``              gauge    trials running now
``prunesearch_trials_done``                 gauge    trials complete
``prunesearch_trials_failed``               gauge    trials failed after their retries
``prunesearch_best_metric``                 gauge    best value of the ranking metric so far
                                                     (tag ``metric``)
==========================================  =======  ==========================================
"""

from __future__ import annotations

import math

from ray.util.metrics import Counter, Gauge

__all__ = ["METRIC_NAMES", "TRIAL_METRIC_NAMES", "RunMetrics", "TrialMetrics"]

#: Names as registered with Ray (the endpoint shows them with a ``ray_`` prefix).
METRIC_NAMES = (
    "prunesearch_generation",
    "prunesearch_evaluations",
    "prunesearch_evaluations_failed",
    "prunesearch_hypervolume",
    "prunesearch_front_size",
    "prunesearch_evals_per_s",
    "prunesearch_portfolio_operator",
)

#: Names published by the Tune runner.
TRIAL_METRIC_NAMES = (
    "prunesearch_trials_running",
    "prunesearch_trials_done",
    "prunesearch_trials_failed",
    "prunesearch_best_metric",
)


class RunMetrics:
    """Publishes one search's progress through ``ray.util.metrics``.

    Call :meth:`update` once per generation from the driver (a process connected to Ray).
    Counters take cumulative totals and add only the difference since the previous call, so
    the driver can always pass its own running totals.

    Args:
        run_name: value of the ``run`` tag on every metric (usually the run directory's name).

    Raises:
        ValueError: ``run_name`` is empty.
    """

    def __init__(self, run_name: str) -> None:
        if not isinstance(run_name, str) or not run_name.strip():
            raise ValueError(f"run_name must be a non-empty string, got {run_name!r}")
        self.run_name = run_name
        self._tags = {"run": run_name}
        run = ("run",)
        self._generation = Gauge(
            "prunesearch_generation", description="last completed generation", tag_keys=run
        )
        self._evaluations = Counter(
            "prunesearch_evaluations",
            description="candidates evaluated (ok and failed)",
            tag_keys=run,
        )
        self._failed = Counter(
            "prunesearch_evaluations_failed",
            description="candidates recorded as failed",
            tag_keys=run,
        )
        self._hypervolume = Gauge(
            "prunesearch_hypervolume", description="hypervolume of the current front", tag_keys=run
        )
        self._front_size = Gauge(
            "prunesearch_front_size", description="members of the current Pareto front",
            tag_keys=run,
        )
        self._evals_per_s = Gauge(
            "prunesearch_evals_per_s",
            description="evaluations per second in the last generation",
            tag_keys=run,
        )
        self._operator = Gauge(
            "prunesearch_portfolio_operator",
            description="1 for the portfolio operator selected last, 0 for the others",
            tag_keys=("run", "operator"),
        )
        self._evaluations_seen = 0
        self._failed_seen = 0
        self._operators_seen: set[str] = set()

    def update(
        self,
        *,
        generation: int,
        evaluations: int,
        failed: int,
        hypervolume: float | None,
        front_size: int,
        evals_per_s: float,
        operator: str | None,
    ) -> None:
        """Publish the state after a generation.

        Args:
            generation: last completed generation.
            evaluations: total candidates evaluated so far in this run (ok and failed).
            failed: total candidates recorded as failed so far.
            hypervolume: hypervolume of the current front; ``None`` leaves the gauge unchanged
                (methods without a reference point).
            front_size: members of the current Pareto front.
            evals_per_s: throughput of the last generation.
            operator: the portfolio operator selected for the next batch (``None``: methods
                without a portfolio; the operator gauge is left unchanged).

        Raises:
            ValueError: a count is negative or a total went down.
        """
        for name, value in (("generation", generation), ("evaluations", evaluations),
                            ("failed", failed), ("front_size", front_size)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if evaluations < self._evaluations_seen or failed < self._failed_seen:
            raise ValueError(
                f"totals must not decrease: evaluations {self._evaluations_seen} -> {evaluations}, "
                f"failed {self._failed_seen} -> {failed}"
            )
        self._generation.set(generation, tags=self._tags)
        # Prometheus counters only go up: add what happened since the last call.
        if evaluations > self._evaluations_seen:
            self._evaluations.inc(evaluations - self._evaluations_seen, tags=self._tags)
        if failed > self._failed_seen:
            self._failed.inc(failed - self._failed_seen, tags=self._tags)
        self._evaluations_seen = evaluations
        self._failed_seen = failed
        if hypervolume is not None and math.isfinite(hypervolume):
            self._hypervolume.set(float(hypervolume), tags=self._tags)
        self._front_size.set(front_size, tags=self._tags)
        if math.isfinite(evals_per_s):
            self._evals_per_s.set(float(evals_per_s), tags=self._tags)
        if operator is not None:
            self._operators_seen.add(operator)
            # One series per operator, so a Grafana panel shows which one is active over time.
            for name in sorted(self._operators_seen):
                self._operator.set(1.0 if name == operator else 0.0,
                                   tags={"run": self.run_name, "operator": name})


class TrialMetrics:
    """Publishes a Tune experiment's progress (trials running, done, failed, best figure).

    Args:
        run_name: value of the ``run`` tag on every metric.
    """

    def __init__(self, run_name: str) -> None:
        if not isinstance(run_name, str) or not run_name.strip():
            raise ValueError(f"run_name must be a non-empty string, got {run_name!r}")
        self._tags = {"run": run_name}
        run = ("run",)
        self._running = Gauge("prunesearch_trials_running", description="trials running now",
                              tag_keys=run)
        self._done = Gauge("prunesearch_trials_done", description="trials complete",
                           tag_keys=run)
        self._failed = Gauge("prunesearch_trials_failed",
                             description="trials failed after their retries", tag_keys=run)
        self._best = Gauge("prunesearch_best_metric",
                           description="best value of the ranking metric so far",
                           tag_keys=("run", "metric"))

    def update(self, *, running: int, done: int, failed: int, best: float | None,
               metric: str) -> None:
        """Publish the current counts and the best value of ``metric`` (``None``: none yet)."""
        for name, value in (("running", running), ("done", done), ("failed", failed)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        self._running.set(running, tags=self._tags)
        self._done.set(done, tags=self._tags)
        self._failed.set(failed, tags=self._tags)
        if best is not None and math.isfinite(best):
            self._best.set(float(best), tags={**self._tags, "metric": metric})
