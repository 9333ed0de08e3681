"""What the generational driver does before its loop: decide what a resume may continue, build
the task and the pymoo problem, and start a fresh algorithm state when there is none.

:func:`resume_point` runs first and builds nothing: every reason to refuse a resume (a journal
and checkpoint that do not match, a checkpoint whose seal does not verify, a missing or changed
latency table) is found before the task is built or a progress line is printed, so a refused
resume is one line and changes nothing.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.cluster.checkpoint import STATE_FILE, DriverState, read_state_blob
from prunesearch.cluster.journal import read_journal
from prunesearch.cluster.run_store import check_latency_table, read_meta
from prunesearch.methods.errors import RunStateError
from prunesearch.methods.task import SearchTask, build_task
from prunesearch.search.errors import ConfigError

__all__ = ["PREPARE_PAUSE_ENV", "PreparedTask", "ResumePoint", "new_state", "prepare_task",
           "resume_point"]

#: Test hook: seconds to sleep while the task is being prepared (before anything is built or
#: checkpointed), so a test can interrupt the driver there. Unset in normal use.
PREPARE_PAUSE_ENV = "PRUNESEARCH_TEST_PREPARE_PAUSE_S"


@dataclasses.dataclass
class ResumePoint:
    """Where a run continues from.

    Attributes:
        records: the journal read back (empty for a new run).
        state_blob: the verified checkpoint bytes, or ``None`` (a new run, or one interrupted
            before its first checkpoint).
        meta: ``state/meta.json`` as it was.
        retimed: why the latency table is re-timed this session (``None``: it is not).
    """

    records: list[dict[str, Any]]
    state_blob: bytes | None
    meta: dict[str, Any]
    retimed: str | None


def resume_point(run_dir: Path, *, resume: bool, retime_table: bool,
                 log: Callable[[str], None]) -> ResumePoint:
    """Read (and check) what ``run_dir`` holds, building nothing.

    Raises:
        RunStateError: a new run in a directory that holds a search; or, on resume, a corrupt
            journal, journaled candidates without a checkpoint, an unreadable or foreign
            checkpoint, a missing or changed latency table (without ``retime_table``).
    """
    state_path = run_dir / STATE_FILE
    journal_path = run_dir / "journal.jsonl"
    if not resume:
        if state_path.exists() or (journal_path.exists() and journal_path.stat().st_size > 0):
            raise RunStateError(f"run directory '{run_dir}' already holds a search; resume it "
                                "instead (run_search(..., resume=True) / prunesearch resume)")
        return ResumePoint(records=[], state_blob=None, meta=read_meta(run_dir), retimed=None)
    records = read_journal(journal_path, log=log)
    state_blob = read_state_blob(state_path)
    if state_blob is None and records:
        raise RunStateError(f"'{run_dir}' has {len(records)} journaled candidates but no "
                            f"checkpoint ({STATE_FILE}): cannot resume")
    meta = read_meta(run_dir)
    retimed = check_latency_table(run_dir, meta, retime=retime_table)
    return ResumePoint(records=records, state_blob=state_blob, meta=meta, retimed=retimed)


@dataclasses.dataclass
class PreparedTask:
    """The task and what the loop derives from it once.

    Attributes:
        task: the :class:`~prunesearch.methods.task.SearchTask`.
        dense: objectives of the unpruned model.
        problem: the pymoo problem over the task's genome bounds.
        failed_F: objectives told for a failed candidate.
        hardware: the hardware fields every journal line records.
    """

    task: SearchTask
    dense: dict[str, float]
    problem: Any
    failed_F: np.ndarray
    hardware: dict[str, Any]


def prepare_task(config: Any, run_dir: Path, *, retimed: str | None,
                 log: Callable[[str], None]) -> PreparedTask:
    """Build the task (base model, data, latency table, dense objectives) and the problem."""
    from prunesearch.search import GenomeProblem

    started = time.perf_counter()
    if config.evaluator.kind == "synthetic":
        log("preparing the synthetic task ...")
    else:
        log(f"preparing the {config.model.source} task: base model, data, latency table "
            "(timed once, then cached), dense objectives ...")
    if retimed is not None:
        log(f"re-timing the latency table ({retimed}; --retime-table): the rest of the search "
            "predicts latency with the new table")
    pause = os.environ.get(PREPARE_PAUSE_ENV)
    if pause:
        time.sleep(float(pause))
    task = build_task(config, run_dir)
    limits = config.search.limits()
    if limits:
        # Before the dense model is evaluated: the floor needs only the latency table.
        refusal = budget_refusal(config.search, problem_floor(task))
        if refusal:
            raise ConfigError(refusal)
    dense = {k: float(v) for k, v in task.dense_objectives().items()}
    log(f"task ready in {time.perf_counter() - started:.0f}s: {len(task.lower)} genes; "
        f"dense error {dense['error']:.4f}, latency {dense['latency_ms']:.3f} ms, "
        f"memory {dense['memory_mb']:.2f} MB")
    # No hv_ref here on purpose: HAMP's internal indicator (operator credit, move ranking)
    # then normalises by the archive's ideal and nadir, which has signal even before any
    # candidate enters the reported reference box (dense error + margin); see METHODS.md.
    problem = GenomeProblem(task.lower, task.upper, n_obj=3,
                            cheap_objectives=task.cheap_objectives,
                            cheap_fn=task.evaluate_cheap, limits=limits,
                            limit_repair=config.search.limit_repair)
    if limits:
        log(budget_line(config.search, dense))
    # Failed candidates are told twice the reference point on every axis: infeasible and
    # dominated by every useful result, yet finite and on the scale of the real objectives
    # (a huge penalty would squash indicator-based selections that normalise by range).
    hv_inc = float(config.search.hv_max_error_increase)
    failed_F = 2.0 * np.array([dense["error"] + hv_inc, dense["latency_ms"], dense["memory_mb"]])
    hardware = {"device": config.hardware.device, "runtime": config.hardware.runtime,
                "dtype": config.hardware.dtype, "batch_size": config.hardware.batch_size}
    return PreparedTask(task=task, dense=dense, problem=problem, failed_F=failed_F,
                        hardware=hardware)


#: The config key of each objective a budget may limit.
BUDGET_KEYS = {1: ("max_latency_ms", "latency_ms", "ms"), 2: ("max_memory_mb", "memory_mb", "MB")}


def problem_floor(task: SearchTask) -> dict[str, float]:
    """Table latency and memory of the narrowest genome (every gene at its lower bound)."""
    values = task.evaluate_cheap(np.asarray(task.lower, dtype=int)[None, :])[0]
    names = [BUDGET_KEYS[k][1] for k in task.cheap_objectives]
    return {name: float(v) for name, v in zip(names, values)}


def budget_refusal(search: Any, floor: Mapping[str, float]) -> str | None:
    """The one-line refusal of a budget no genome meets (``None``: every genome space's floor
    meets it)."""
    parts = []
    for key, objective, unit in BUDGET_KEYS.values():
        limit = getattr(search, key)
        if limit is not None and objective not in floor:
            parts.append(f"search.{key}: this task has no {objective} objective to limit")
        elif limit is not None and floor[objective] > limit:
            parts.append(f"search.{key}={limit:g} is below {floor[objective]:.4g} {unit}, the "
                         f"table {objective.split('_')[0]} of the narrowest network this "
                         "search can build (every group at its smallest width)")
    if not parts:
        return None
    return "; ".join(parts) + ": no candidate can meet it (raise the budget, or use a " \
        "smaller hardware.granularity)"


def budget_line(search: Any, dense: Mapping[str, float]) -> str:
    """The progress line that states the device budget against the dense network."""
    parts = []
    for key, objective, unit in BUDGET_KEYS.values():
        limit = getattr(search, key)
        if limit is not None:
            share = limit / dense[objective] if dense[objective] > 0 else float("inf")
            parts.append(f"{objective.split('_')[0]} <= {limit:g} {unit} "
                         f"({share:.0%} of dense)" + ("; the dense network meets it"
                                                      if dense[objective] <= limit else ""))
    return ("device budget: " + ", ".join(parts) + ". Candidates beyond it are shrunk to fit "
            "before they are evaluated")


def new_state(config: Any, problem: Any) -> DriverState:
    """A fresh algorithm for ``config.method``, set up on ``problem`` with the run's seed."""
    from pymoo.termination.max_eval import MaximumFunctionCallTermination

    from prunesearch.search import make_algorithm

    algorithm = make_algorithm(config.method, config.search)
    # pymoo's own counter does not move in a hand-driven ask/tell loop: the driver counts
    # journaled evaluations itself; the search layer's algorithms also read this termination
    # to cut their batches to the budget.
    algorithm.setup(problem, termination=MaximumFunctionCallTermination(int(config.search.budget)),
                    seed=int(config.seed), verbose=False)
    return DriverState(algorithm=algorithm, pending=None)
