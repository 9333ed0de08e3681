"""A deterministic stand-in task: the synthetic ResNet-56-like problem.

Used by driver tests (resume equals an uninterrupted run), the scaling benchmark (evaluations
that sleep a seeded 1.0 s +- jitter) and anywhere a real network is not the point. Selected with
``evaluator.kind: synthetic``. With ``evaluator.synthetic_duration: macs`` the sleep is also
proportional to the candidate's MACs (wide candidates take longer, as real fine-tuning does).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.search.synthetic import LOWER, UPPER, synthetic_cheap, synthetic_error

__all__ = ["SyntheticEvaluator", "SyntheticTask"]

class SyntheticTask:
    """:class:`~prunesearch.methods.task.SearchTask` over the synthetic pruning problem."""

    cheap_objectives = (1, 2)

    def __init__(self, config: Any, run_dir: Path | None = None) -> None:
        self._evaluator_settings = config.evaluator
        self.lower = LOWER.copy()
        self.upper = UPPER.copy()
        self.group_names = [f"block{i}" for i in range(27)] + [f"stage{i}" for i in range(3)]
        self.granularity = 4

    def channels(self, genome: Sequence[int]) -> list[int]:
        return [int(g) * self.granularity for g in genome]

    def evaluate_cheap(self, genomes: np.ndarray) -> np.ndarray:
        return synthetic_cheap(np.asarray(genomes, dtype=int))

    def cheap_metrics(self, genome: Sequence[int]) -> dict[str, float]:
        g = np.asarray(genome, dtype=float)
        return {"macs": float(np.sum(g**2)), "params": float(np.sum(g))}

    def dense_objectives(self) -> dict[str, float]:
        full = self.upper[None, :]
        latency, memory = synthetic_cheap(full)[0]
        return {"error": synthetic_error(self.upper, noise=False),
                "latency_ms": float(latency), "memory_mb": float(memory)}

    def payload(self) -> dict[str, Any]:
        s = self._evaluator_settings
        return {"kind": "synthetic", "sleep_s": s.synthetic_sleep_s, "jitter": s.synthetic_jitter,
                "duration": s.synthetic_duration}

    def measure(self, genome: Sequence[int], weights: Any = None) -> dict[str, float]:
        latency = float(self.evaluate_cheap(np.asarray([genome]))[0, 0])
        return {"latency_ms_measured": latency, "latency_ms_p90": latency}


class SyntheticEvaluator:
    """Evaluates the synthetic problem, optionally sleeping a seeded duration per candidate.

    Fault-injection keys of the payload (tests of the cluster driver add them; the config never
    sets them): ``crash_ids`` -- candidate ids whose evaluation kills the evaluator's process
    (``os._exit``) every time; ``crash_once_ids`` with ``crash_marker_dir`` -- ids that kill the
    process on their first attempt only (a marker file records the crash across processes);
    ``nan_ids`` -- ids whose error comes back NaN with status ok (a driver must not trust it).
    """

    def __init__(self, payload: dict[str, Any]) -> None:
        self.sleep_s = float(payload.get("sleep_s", 0.0))
        self.jitter = float(payload.get("jitter", 0.0))
        self.duration = str(payload.get("duration", "fixed"))
        if self.duration not in ("fixed", "macs"):
            raise ValueError(f"payload: duration must be 'fixed' or 'macs', got {self.duration!r}")
        self._dense_macs = float(np.sum(np.asarray(UPPER, dtype=float) ** 2))
        self.crash_ids = frozenset(int(i) for i in payload.get("crash_ids", ()))
        self.crash_once_ids = frozenset(int(i) for i in payload.get("crash_once_ids", ()))
        self.nan_ids = frozenset(int(i) for i in payload.get("nan_ids", ()))
        marker_dir = payload.get("crash_marker_dir")
        if self.crash_once_ids and not marker_dir:
            raise ValueError("payload: crash_once_ids needs crash_marker_dir")
        self.crash_marker_dir = Path(marker_dir) if marker_dir else None

    def _maybe_crash(self, candidate_id: int) -> None:
        if candidate_id in self.crash_ids:
            os._exit(13)
        if candidate_id in self.crash_once_ids and self.crash_marker_dir is not None:
            marker = self.crash_marker_dir / f"crashed-{candidate_id}"
            if not marker.exists():
                marker.touch()
                os._exit(13)

    def evaluate(self, genome: Sequence[int], *, candidate_id: int, seed: int) -> dict[str, Any]:
        start = time.perf_counter()
        self._maybe_crash(int(candidate_id))
        if self.sleep_s > 0:
            rng = np.random.default_rng([seed, candidate_id])
            scale = 1.0
            if self.duration == "macs":  # the task's analytic MACs: sum of squared granules
                scale = float(np.sum(np.asarray(genome, dtype=float) ** 2)) / self._dense_macs
            time.sleep(self.sleep_s * scale * (1.0 + self.jitter * rng.uniform(-1.0, 1.0)))
        genome = [int(g) for g in genome]
        latency, memory = synthetic_cheap(np.asarray([genome]))[0]
        error = float("nan") if candidate_id in self.nan_ids else synthetic_error(genome)
        return {
            "status": "ok",
            "reason": None,
            "objectives": {"error": error, "latency_ms": float(latency), "memory_mb": float(memory)},
            "metrics": {"val_acc": 1.0 - error},
            "wall_s": time.perf_counter() - start,
            "weights": None,
        }
