"""Progress lines and dashboard metrics of a Tune experiment, from the driver (a Tune
``Callback``)."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["progress_callback"]


def progress_callback(run_name: str, log_path: Path, metric: str, mode: str) -> Any:
    """A Tune callback for progress lines and dashboard metrics. Tune pickles it into its
    experiment state (which prunesearch never restores: a resume makes a new one), so it holds
    plain data only."""
    from ray.tune import Callback

    class _Progress(Callback):
        def __init__(self) -> None:
            self.run_name, self.log_path, self.metric, self.mode = (run_name, str(log_path),
                                                                    metric, mode)
            self.best: float | None = None
            self.running: set[str] = set()
            self.done: set[str] = set()
            self.failed: set[str] = set()
            self._metrics: Any = None

        def __getstate__(self) -> dict[str, Any]:
            return {**self.__dict__, "_metrics": None}

        def _log(self, line: str) -> None:
            print(line, flush=True)
            with contextlib.suppress(OSError), open(self.log_path, "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

        def _publish(self) -> None:
            if self._metrics is None:
                try:
                    from prunesearch.cluster.metrics import TrialMetrics

                    self._metrics = TrialMetrics(self.run_name)
                except Exception as exc:  # noqa: BLE001 - metrics are optional
                    self._metrics = False
                    self._log(f"metrics disabled: {type(exc).__name__}: {exc}")
            if self._metrics:
                self._metrics.update(running=len(self.running), done=len(self.done),
                                     failed=len(self.failed), best=self.best,
                                     metric=self.metric)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.running.add(trial.trial_id)
            self._publish()

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            self.running.add(trial.trial_id)
            value = result.get(self.metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                better = (self.best is None or (value > self.best if self.mode == "max"
                                                else value < self.best))
                self.best = float(value) if better else self.best
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in result.items()
                              if k in (self.metric, "round", "epoch", "phase", "val_acc",
                                       "test_acc"))
            self._log(f"trial {trial.trial_id} step {result.get('step')}: {shown}")
            self._publish()

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            self.running.discard(trial.trial_id)
            self.done.add(trial.trial_id)
            self._log(f"trial {trial.trial_id} complete ({len(self.done)} of {len(trials)} "
                      "done)")
            self._publish()

        def on_trial_error(self, iteration: int, trials: list, trial: Any,
                           **info: Any) -> None:
            self.running.discard(trial.trial_id)
            self.failed.add(trial.trial_id)
            self._log(f"trial {trial.trial_id} failed after its retries")
            self._publish()

    return _Progress()


