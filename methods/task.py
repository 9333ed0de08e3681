"""The contract between the search driver (``cluster``) and the torch side (``methods``).

A :class:`SearchTask` is built once on the driver from the resolved config. It knows the genome
space, computes the *cheap* objectives exactly (table latency, memory from tensor shapes), and
produces a picklable ``payload`` that evaluator actors turn into an :class:`Evaluator` with
:func:`make_evaluator`. Nothing here imports Ray or pymoo.

Result dicts (one per candidate; the journal stores them as they are plus driver fields):

    {"status": "ok" | "failed", "reason": str | None,
     "objectives": {"error": float, "latency_ms": float, "memory_mb": float},
     "metrics": {"macs": int, "params": int, "val_acc": float, ...},
     "wall_s": float,
     "weights": dict[str, np.ndarray] | None}   # fine-tuned pruned weights (driver keeps front's)
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from prunesearch.methods.errors import lookup

__all__ = ["TABLE_FILE", "TASKS", "Evaluator", "SearchTask", "TaskEntry", "build_task",
           "candidate_seed", "failed_result", "make_evaluator"]

#: The latency table a task predicts with, in its run directory (a resumed run reuses it).
TABLE_FILE = "latency_table.json"


@runtime_checkable
class Evaluator(Protocol):
    """Evaluates one candidate genome. Lives on an evaluator actor (or in-process)."""

    def evaluate(self, genome: Sequence[int], *, candidate_id: int, seed: int) -> dict[str, Any]:
        """Return a result dict (see module docstring). Must not raise for a bad candidate:
        divergence, OOM and crashes become ``status='failed'`` with a reason."""
        ...


class SearchTask(Protocol):
    """Everything the driver needs to know about one pruning problem."""

    #: Inclusive integer bounds of the genome (granules kept per group).
    lower: np.ndarray
    upper: np.ndarray
    #: One name per gene (prunable group).
    group_names: list[str]
    #: Indices of objectives (error=0, latency_ms=1, memory_mb=2) that are computed exactly.
    cheap_objectives: tuple[int, ...]

    def channels(self, genome: Sequence[int]) -> list[int]:
        """Kept channels per group for a genome."""
        ...

    def evaluate_cheap(self, genomes: np.ndarray) -> np.ndarray:
        """(n, len(cheap_objectives)) exact cheap objectives, e.g. [latency_ms, memory_mb]."""
        ...

    def cheap_metrics(self, genome: Sequence[int]) -> dict[str, float]:
        """Analytic metrics (macs, params) for the journal and pareto.csv."""
        ...

    def dense_objectives(self) -> dict[str, float]:
        """error, latency_ms, memory_mb of the unpruned model (hypervolume normalisation)."""
        ...

    def payload(self) -> dict[str, Any]:
        """Picklable description for :func:`make_evaluator` (settings + numpy base weights)."""
        ...

    def measure(self, genome: Sequence[int], weights: dict[str, np.ndarray] | None) -> dict[str, float]:
        """End-to-end measurement on an idle device: ``latency_ms_measured`` (median),
        ``latency_ms_p90``, and ``peak_memory_mb`` where the device reports it."""
        ...


def candidate_seed(run_seed: int, candidate_id: int) -> int:
    """The seed of one candidate's evaluation (data order, augmentation): a function of the run
    seed and the candidate id only, so a retried or resumed candidate, evaluated anywhere, gets
    the same seed. Derived once, by the driver; evaluators use the seed they are given as it is.
    The dense model's evaluation uses ``candidate_id=-1``."""
    sequence = np.random.SeedSequence([int(run_seed), int(candidate_id) & 0xFFFFFFFF])
    return int(sequence.generate_state(1)[0])


def failed_result(reason: str, wall_s: float = 0.0) -> dict[str, Any]:
    """A result for a candidate that could not be evaluated."""
    return {"status": "failed", "reason": reason, "objectives": None, "metrics": {},
            "wall_s": wall_s, "weights": None}


@dataclasses.dataclass(frozen=True)
class TaskEntry:
    """One ``evaluator.kind``: its task (driver side) and its evaluator (actor side).

    Attributes:
        task: ``"module:Class"`` of the :class:`SearchTask`, built as ``Class(config,
            run_dir=run_dir)`` (imported on first use: torch stays unimported for ``synthetic``).
        evaluator: ``"module:Class"`` of the :class:`Evaluator`, built as ``Class(payload)``.
        uses_torch: the evaluator runs torch, so its process gets the configured torch thread
            count before it is built (an evaluator that does not, like ``synthetic``, never
            imports torch: 1.5 s less per evaluator process).
    """

    task: str
    evaluator: str
    uses_torch: bool = True


#: ``evaluator.kind`` -> its entry: the only list of kinds (the config validates against it).
TASKS: dict[str, TaskEntry] = {
    "finetune": TaskEntry("prunesearch.methods.evaluator:PruningTask",
                          "prunesearch.methods.evaluator:CandidateEvaluator"),
    "synthetic": TaskEntry("prunesearch.methods.synthetic:SyntheticTask",
                           "prunesearch.methods.synthetic:SyntheticEvaluator", uses_torch=False),
}


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def build_task(config: Any, run_dir: Path | None = None) -> SearchTask:
    """Build the task a job config describes (on the driver).

    ``config`` is a ``prunesearch.cluster.config.JobConfig`` (duck-typed: methods never imports
    cluster). ``run_dir`` receives ``latency_table.json``; an existing one is reused (resume).
    """
    entry = lookup(TASKS, config.evaluator.kind, key="evaluator.kind", kind="evaluator kind")
    return _load(entry.task)(config, run_dir=run_dir)


def make_evaluator(payload: dict[str, Any], *, threads: int | None = None) -> Evaluator:
    """Build the evaluator a task's payload describes (on an actor, or in-process).

    Args:
        threads: torch intra-op threads to set first, for an evaluator that uses torch (an
            actor's: fixed so that timings do not depend on how many share a node).
    """
    entry = lookup(TASKS, payload["kind"], key="evaluator.kind", kind="evaluator kind")
    if threads is not None and entry.uses_torch:
        try:
            import torch

            torch.set_num_threads(int(threads))
        except ImportError:  # pragma: no cover - installs without torch
            pass
    return _load(entry.evaluator)(payload)
