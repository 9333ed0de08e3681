"""A toy trial-based method for the Tune runner's tests (pure Python, fractions of a second).

Importing this module registers method ``toy`` (a ``trials`` entry). Ray workers import it by
name when they unpickle the trainable, so tests put this folder on ``PYTHONPATH`` before Ray
starts. Run as ``python toy_trials.py ARGS`` it is the ``prunesearch`` CLI with ``toy`` known.

Parameters come from existing config keys: ``seed`` picks the trial's score curve,
``evaluator.finetune_steps`` its number of steps and ``evaluator.synthetic_sleep_s`` how long
each step sleeps (for kill tests). The trial with seed :data:`FAIL_ALWAYS` raises in every
attempt, the one with seed :data:`FAIL_ONCE` in its first attempt only; each failed attempt
leaves a marker file in the trial's work folder (which survives Tune's retries).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from prunesearch.cluster.registry import METHODS, MethodEntry, register_method
from prunesearch.methods.trial import TrialMethod


FAIL_ALWAYS = 13
FAIL_ONCE = 14


def score(seed: int, step: int) -> float:
    return round(1.0 - 1.0 / (step + 1) - 0.01 * seed, 6)


class ToyTrial:
    def __init__(self, config: Any, work_dir: Path) -> None:
        self.seed = int(config.seed)
        self.total = int(config.evaluator.finetune_steps)
        self.completed = 0
        self.history: list[float] = []
        self.sleep_s = float(config.evaluator.synthetic_sleep_s)
        self.work_dir = Path(work_dir)

    @property
    def done(self) -> bool:
        return self.completed >= self.total

    @property
    def completed_steps(self) -> int:
        return self.completed

    def step(self) -> dict[str, Any]:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.seed in (FAIL_ALWAYS, FAIL_ONCE):
            markers = list(self.work_dir.glob("failed-attempt-*"))
            if self.seed == FAIL_ALWAYS or not markers:
                (self.work_dir / f"failed-attempt-{len(markers)}").touch()
                raise RuntimeError(f"toy trial seed {self.seed} fails on purpose")
        self.completed += 1
        value = score(self.seed, self.completed)
        self.history.append(value)
        return {"score": value, "epoch": self.completed}

    def state_dict(self) -> dict[str, Any]:
        return {"completed": self.completed, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.completed = int(state["completed"])
        self.history = [float(v) for v in state["history"]]

    def final(self) -> dict[str, Any]:
        # A made-up network: faster for larger seeds, less accurate too.
        return {"error": 0.1 + 0.01 * self.seed, "latency_ms": 10.0 / (1 + self.seed),
                "memory_mb": 1.0, "macs": 1e6 / (1 + self.seed), "params": 1000,
                "genome": [self.seed, 1]}


def make_trial(config: Any, work_dir: Path) -> ToyTrial:
    return ToyTrial(config, work_dir)


TOY_METHOD = TrialMethod(name="toy", section="evaluator", make_trial=make_trial, metric="score",
                         mode="max", default_space=lambda config: {"seed": [0, 1]})

if "toy" not in METHODS:
    register_method(MethodEntry(
        name="toy", kind="trials", help="toy trial method (tests)",
        runner="prunesearch.cluster.tune_runner:run_trials",
        reporter="prunesearch.cluster.tune_report:report_trials",
        checker="prunesearch.cluster.tune_runner:check_trial_inputs",
        trial_method="toy_trials:TOY_METHOD",
    ))

if __name__ == "__main__":
    from prunesearch.cluster.cli import main

    sys.exit(main(sys.argv[1:]))
