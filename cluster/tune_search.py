"""Which trials a Tune attempt runs: the plan of a grid or random search, and the searcher that
hands Tune exactly those trials (continued ones first), or Optuna's suggestions after them.

The runner never restores Tune's pickled experiment state (see :mod:`tune_state`); instead
every attempt is a fresh ``Tuner`` whose searcher knows, from data alone, what is left:

- grid and random searches are planned up front by prunesearch (the grid in order, repeated
  ``num_samples`` times; random points drawn from ``seed``), so the points not yet run are the
  plan minus the trials already in the run directory, and a resumed run runs the same trials
  as an uninterrupted one;
- Optuna is told the finished trials (their parameters and last results, as completed
  Optuna trials), the unfinished ones are continued with their own parameters, and the rest
  are suggested by a sampler seeded ``seed + attempt`` (so a resumed run's random start-up
  points differ from the first attempt's instead of repeating them).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune.search import Searcher

__all__ = ["PlannedSearch", "param_domains", "plan_points", "point_key", "tell_finished"]


def param_domains(space: Mapping[str, Any], search: str) -> dict[str, Any]:
    """Tune domains of ``tune.space`` (lists are choices, ranges uniform/log, ints int)."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, values in space.items():
        if isinstance(values, list):
            out[key] = tune.grid_search(values) if search == "grid" else tune.choice(values)
        else:
            lo, hi, log = values["min"], values["max"], values["log"]
            if isinstance(lo, int) and isinstance(hi, int):
                out[key] = tune.lograndint(lo, hi + 1) if log else tune.randint(lo, hi + 1)
            else:
                out[key] = tune.loguniform(lo, hi) if log else tune.uniform(lo, hi)
    return out


def plan_points(space: Mapping[str, Any], search: str, num_samples: int,
                seed: int) -> list[dict[str, Any]]:
    """Every trial's parameters of a grid or random search, in trial order (deterministic)."""
    keys = list(space)
    if search == "grid":
        options = [space[k] for k in keys]
        grid = [dict(zip(keys, values, strict=True)) for values in itertools.product(*options)]
        return [dict(point) for _ in range(num_samples) for point in grid]
    import numpy as np
    from ray.tune.search.sample import _BackwardsCompatibleNumpyRng

    rng = _BackwardsCompatibleNumpyRng(np.random.default_rng(seed))
    domains = param_domains(space, "random")
    return [{k: _plain(domains[k].sample(random_state=rng)) for k in keys}
            for _ in range(num_samples)]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and callable(value.item) else value


def point_key(params: Mapping[str, Any]) -> str:
    """A canonical text of a trial's parameters (trials with equal parameters are equal)."""
    return json.dumps(params, sort_keys=True, default=str)


def tell_finished(optuna_search: Any, params: Mapping[str, Any], result: Mapping[str, Any],
                  metrics: Sequence[str]) -> None:
    """Tell an ``OptunaSearch`` a trial finished in an earlier attempt (a completed Optuna trial
    with ``params`` and the metrics of its last ``result``; failed if one is missing)."""
    import optuna

    values = [result.get(m) for m in metrics]
    finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
    if len(metrics) == 1:
        optuna_search.add_evaluated_point(dict(params), values[0] if finite else None,
                                          error=not finite)
        return
    # OptunaSearch.add_evaluated_point takes one value only; several objectives go to its
    # study directly (Ray 2.60: ``_ot_study`` and the converted ``_space``).
    state = optuna.trial.TrialState.COMPLETE if finite else optuna.trial.TrialState.FAIL
    trial = optuna.trial.create_trial(state=state, values=values if finite else None,
                                      params=dict(params),
                                      distributions=optuna_search._space)
    optuna_search._ot_study.add_trial(trial)


class PlannedSearch(Searcher):
    """A Tune searcher that suggests ``points`` in order, then (with ``inner``) whatever the
    inner searcher suggests. A point that continues an earlier trial is told to ``inner``
    when it completes, as if ``inner`` had suggested it."""

    def __init__(self, points: Sequence[Mapping[str, Any]], *, inner: Searcher | None = None,
                 metrics: Sequence[str] = (), strip: str | None = None) -> None:
        super().__init__(metric=None, mode=None)
        self._points = [dict(p) for p in points]
        self._inner = inner
        self._metrics = list(metrics)
        self._strip = strip
        self._fixed: dict[str, dict[str, Any]] = {}
        self._from_inner: set[str] = set()

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._points:
            point = self._points.pop(0)
            self._fixed[trial_id] = point
            return dict(point)
        if self._inner is not None:
            suggestion = self._inner.suggest(trial_id)
            if isinstance(suggestion, dict):
                self._from_inner.add(trial_id)
            return suggestion
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._from_inner:
            self._inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id in self._from_inner:
            self._inner.on_trial_complete(trial_id, result=result, error=error)
        elif trial_id in self._fixed and self._inner is not None and result and not error:
            params = {k: v for k, v in self._fixed[trial_id].items() if k != self._strip}
            tell_finished(self._inner, params, result, self._metrics)

    def save(self, checkpoint_path: str) -> None:
        # Tune snapshots its searcher; prunesearch never restores it (resume rebuilds the
        # searcher from the trials' data), so the snapshot is a JSON note, not a pickle.
        with open(checkpoint_path, "w", encoding="utf-8") as handle:
            json.dump({"points_left": len(self._points)}, handle)

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError("prunesearch never restores a Tune searcher")
