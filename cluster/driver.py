"""The generational search driver: the loop. pymoo ask/tell here, evaluations on Ray actors.

Per generation:

1. ``ask`` one batch from the algorithm. Genomes the journal already holds are answered from it
   (never evaluated or journaled twice, also when a batch repeats a genome); new genomes get
   global, increasing candidate ids in batch order; the last batch is truncated to the budget
   (:mod:`~prunesearch.cluster.batch_plan`).
2. The algorithm (RNG included) and the asked batch are checkpointed atomically, sealed, to
   ``state/driver.pkl`` *before* anything is evaluated (:mod:`~prunesearch.cluster.checkpoint`).
3. New candidates are spread over the evaluator pool; each result is journaled (append, flush,
   fsync) as it arrives; weights of results that reach the current Pareto front are saved under
   ``models/`` before their journal line (:mod:`~prunesearch.cluster.run_store`).
4. Once the whole batch is in, it is told back in candidate-id order (arrival order never
   changes a decision; failed candidates are infeasible and dominated). The next batch is asked
   and checkpointed, then models that left the front are deleted, a progress line is printed,
   metrics are published and the run directory is mirrored to ``storage``.

Resuming verifies the checkpoint's seal and the latency table's hash before anything is built,
reads the journal back (dropping a torn last line) and finishes the checkpointed batch:
candidates already journaled are answered from the journal, the rest (in flight when the driver
died) are evaluated again. With a deterministic evaluator a resumed search ends with exactly the
front of an uninterrupted one. A run interrupted while its task was being prepared (no
checkpoint, nothing journaled) starts its search afresh on resume.

At the end every front member is re-timed end to end on an idle device
(:mod:`~prunesearch.cluster.retime`) and the report (``pareto.csv``, ``pareto.png``,
``summary.json``) is written.

Why this module is a little over 400 lines: the loop and its per-candidate and per-generation
steps are one job; every other job lives in the modules named above. The names other modules
and old checkpoints know under this module (``connect_ray``,
``_RunLog``, ``BatchPlan``, ``_State``, ``_Pending``, ...) are re-exported here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.cluster.actors import EvaluatorPool, PoolJob
from prunesearch.cluster.archive import Archive
from prunesearch.cluster.batch_plan import BatchPlan, plan_batch, tell_batch
from prunesearch.cluster.checkpoint import (
    CHECKPOINT_PAUSE_ENV,
    STATE_FILE,
    DriverState,
    PendingBatch,
    load_state,
    save_state,
)
from prunesearch.cluster.config import JobConfig
from prunesearch.cluster.connect import check_cluster_device, cluster_address, connect_ray
from prunesearch.cluster.journal import OBJECTIVE_NAMES, Journal, journal_record
from prunesearch.cluster.report import (
    front_hypervolume,
    objectives_of,
    read_measured,
    write_report,
    write_summary,
)
from prunesearch.cluster.resume_rule import diff_search_keys
from prunesearch.cluster.retime import TABLE_WARN_ERROR, retime_front, table_warning
from prunesearch.cluster.run_store import (
    ModelStore,
    record_table,
    save_model,
    search_summary,
    write_meta,
)
from prunesearch.cluster.runlog import RunLog, sigterm_as_interrupt
from prunesearch.cluster.search_setup import (
    PREPARE_PAUSE_ENV,
    new_state,
    prepare_task,
    resume_point,
)
from prunesearch.cluster.storage import mirror_run, mirror_uri
from prunesearch.methods.errors import RunStateError
from prunesearch.methods.task import candidate_seed, failed_result

__all__ = [
    "CHECKPOINT_PAUSE_ENV",
    "PREPARE_PAUSE_ENV",
    "STATE_FILE",
    "TABLE_WARN_ERROR",
    "BatchPlan",
    "candidate_seed",
    "connect_ray",
    "diff_search_keys",
    "plan_batch",
    "run_search",
    "save_model",
]

# Old names, kept so that code importing them from here (cluster/tune_runner.py, the fine-tune
# runner) and pickles naming them still resolve.
_RunLog = RunLog
_State = DriverState
_Pending = PendingBatch
_sigterm_as_interrupt = sigterm_as_interrupt

#: Generations in a row whose whole batch was already evaluated before the search gives up
#: (the algorithm has converged onto known genomes; more asks would spin without evaluating).
_MAX_IDLE_GENERATIONS = 25
#: Asks in a row that may come back empty before the search ends (see ``_ask``).
_MAX_EMPTY_ASKS = 10


def run_search(config: JobConfig, run_dir: Path, *, address: str | None = None,
               resume: bool = False, retime_table: bool = False,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) a generational search and write its run directory.

    The caller (the CLI) creates ``run_dir`` and writes ``config.yaml``; this writes
    ``journal.jsonl``, ``state/``, ``models/``, ``driver.log``, ``pareto.csv``, ``pareto.png``
    and ``summary.json``, and mirrors them to ``config.storage`` when set.

    Args:
        config: the resolved job config (``method`` one of the generational searches).
        run_dir: the run directory.
        address: Ray cluster to join (default ``RAY_ADDRESS``, else a private local instance).
        resume: continue the search checkpointed in ``run_dir``.
        retime_table: on resume, build the latency table again instead of refusing a missing
            or changed ``latency_table.json`` (recorded in ``meta.json`` and the summary).
        log: receives progress lines (also appended to ``driver.log``).

    Returns:
        The summary dict (as written to ``summary.json``); ``status`` is ``complete``, or
        ``interrupted`` after KeyboardInterrupt/SIGTERM (state saved, resumable).
        A KeyboardInterrupt while the task is prepared propagates (nothing is checkpointed
        yet; resuming starts the search afresh).

    Raises:
        RunStateError: ``resume`` is False but ``run_dir`` already holds a search; or, on
            resume, the checkpoint is unreadable, not sealed with this user's key, or does not
            match the journal, or the latency table is missing or changed.
        UsageError: bad input found while building the task, or a CUDA device on a joined
            cluster without GPUs.
    """
    import ray

    run_dir = Path(run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_log = RunLog(run_dir / "driver.log", log)
    was_connected = ray.is_initialized()
    try:
        if was_connected or cluster_address(address):
            # Joining a cluster starts nothing, and only the cluster knows whether it has the
            # device: ask it before the task is built for that device.
            connect_ray(address, config)
            check_cluster_device(config)
        # Otherwise the task (base model, latency table, dense objectives) is built before Ray
        # starts: bad input fails in seconds with nothing started, and the table is timed while
        # no evaluator runs on this device.
        driver = _Driver(config, run_dir, resume=resume, retime_table=retime_table, log=run_log)
        driver.local_ray = not (was_connected or cluster_address(address))
        connect_ray(address, config)
        return driver.run()
    finally:
        if not was_connected and ray.is_initialized():
            ray.shutdown()
        run_log.close()


class _Driver:
    def __init__(self, config: JobConfig, run_dir: Path, *, resume: bool, retime_table: bool,
                 log: Callable[[str], None]) -> None:
        self.config = config
        self.run_dir = run_dir
        self.log = log
        self.local_ray = False  # set by run_search: this run started its own Ray instance
        self.session_start = time.perf_counter()
        self.state_path = run_dir / STATE_FILE
        self.journal_path = run_dir / "journal.jsonl"
        self.models = ModelStore(run_dir / "models")
        self.models_dir = self.models.models_dir
        self.budget = int(config.search.budget)

        point = resume_point(run_dir, resume=resume, retime_table=retime_table, log=log)
        records, self.meta = point.records, point.meta
        prepared = prepare_task(config, run_dir, retimed=point.retimed, log=log)
        self.task, self.dense, self.problem = prepared.task, prepared.dense, prepared.problem
        self.failed_F, self.hardware = prepared.failed_F, prepared.hardware
        self.run_name = self.meta.get("run_name") or run_dir.name
        self.storage_uri = mirror_uri(config.storage, self.run_name) if config.storage else None
        self.meta.update({
            "run_name": self.run_name,
            "method": config.method,
            "budget": self.budget,
            "dense": self.dense,
            "hv_max_error_increase": float(config.search.hv_max_error_increase),
            "storage_uri": self.storage_uri,
            "hardware": self.hardware,
            "objectives": list(OBJECTIVE_NAMES),
            "device_budget": config.search.device_budget() or None,
        })
        record_table(run_dir, self.meta, retimed=point.retimed, evaluations=len(records))
        write_meta(run_dir, self.meta)

        self.archive = Archive()
        # The loop's views of the archive (shared dicts, not copies).
        self.by_id, self.known, self.front = (self.archive.by_id, self.archive.known,
                                              self.archive.front)
        for record in records:
            self.archive.add(record)
        if point.state_blob is None:
            self.state = new_state(config, self.problem)
            if resume:
                log(f"resuming {self.run_name}: nothing was checkpointed yet (interrupted while "
                    "the task was prepared); starting the search")
        else:
            self.state = load_state(point.state_blob, self.problem, source=str(self.state_path))
            if (self.state.async_state is None) != (config.search.mode == "generational"):
                raise RunStateError(f"{self.state_path} was written by a search in the other "
                                    f"search.mode (config: {config.search.mode}): journal and "
                                    "state do not match")
            # Async checkpoints are periodic: candidates asked after the last one are asked
            # again by its replay (which checks their genomes), so they are not strays.
            stray = [cid for cid in self.by_id if cid >= self.state.next_id]
            if stray and self.state.async_state is None:
                raise RunStateError(f"journal holds candidates {stray[:5]} newer than the "
                                    f"checkpoint (next id {self.state.next_id}): journal and "
                                    "state do not match")
            if self.state.async_state is not None:
                async_state = self.state.async_state
                log(f"resuming {self.run_name} (async): {len(records)} journaled, "
                    f"{len(records) - async_state.told} to replay in journaled order, "
                    + ("search finished" if self.state.finished else
                       f"{len(async_state.outstanding)} asked at the checkpoint"))
            else:
                log(f"resuming {self.run_name}: {len(records)} journaled, generation "
                    f"{self.state.generation}, "
                    + (f"{len(self._unanswered())} candidates to (re-)submit"
                       if self.state.pending else "search finished"))
        self.pool: EvaluatorPool | None = None
        self.journal: Journal | None = None
        self.metrics = None
        self.session_evals = 0

    # ------------------------------------------------------------------ bookkeeping
    @property
    def evaluations(self) -> int:
        return self.archive.evaluations

    @property
    def failed(self) -> int:
        return self.archive.failed

    def _unanswered(self) -> list[tuple[int, tuple[int, ...]]]:
        pending = self.state.pending if self.state else None
        if pending is None:
            return []
        return [(cid, g) for cid, g in pending.plan.new if cid not in self.by_id]

    def _wall_s(self) -> float:
        return self.state.wall_s + (time.perf_counter() - self.session_start)

    def _save_state(self) -> None:
        save_state(self.state_path, dataclasses.replace(self.state, wall_s=self._wall_s()),
                   self.problem)

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        status = "failed"
        error: BaseException | None = None
        try:
            with sigterm_as_interrupt():
                self._start_metrics()
                if self.config.search.mode == "async":
                    self._run_async()
                else:
                    self._run_generational()
                self._measure_front()
                status = "complete"
        except KeyboardInterrupt:
            status = "interrupted"
            self.log(f"interrupted: state saved in {self.run_dir}; continue with "
                     f"'prunesearch resume {self.run_dir}'")
        except BaseException as exc:  # noqa: BLE001 - recorded in summary.json, then re-raised
            error = exc
            self.log(f"search failed: {type(exc).__name__}: {exc}")
        finally:
            if self.pool is not None:
                self.pool.shutdown()
            if self.journal is not None:
                self.journal.close()
            summary = self._finish(status)
        if error is not None:
            raise error
        return summary

    def _run_generational(self) -> None:
        if self.state.pending is None and not self.state.finished:
            self._ask()
        if self.state.pending is not None or not self._measured_all():
            self._start_pool()
        while self.state.pending is not None:
            self._run_generation()

    def _run_async(self) -> None:
        """``search.mode: async`` (:mod:`~prunesearch.cluster.async_loop`)."""
        from prunesearch.cluster.async_loop import AsyncLoop

        loop = AsyncLoop(self)
        loop.prepare()
        if loop.active or not self._measured_all():
            self._start_pool()
        loop.run()

    def _finish(self, status: str) -> dict[str, Any]:
        wall_s = self._wall_s()
        summary = write_report(self.run_dir, status=status, wall_s=wall_s,
                               generations=self.state.generation, plots=True)
        self._mirror()
        if status == "complete":
            hv = summary.get("hypervolume")
            self.log(f"search complete: {summary['evaluations']} evaluations "
                     f"({summary['failed']} failed), front {summary['front_size']}, "
                     + (f"HV {hv:.4f}, " if hv is not None else "") + f"{wall_s:.0f}s")
            over = (summary.get("device_budget") or {}).get("measured_over")
            if over:
                worst = max(over.values())
                self.log(f"device budget: {len(over)} of {summary['front_size']} front members "
                         f"measured end to end above {summary['device_budget']['max_latency_ms']:g}"
                         f" ms (worst {worst:.3f} ms; the budget holds their table latency): "
                         "'export --max-latency-ms' leaves them out")
        return summary

    def _start_metrics(self) -> None:
        try:
            from prunesearch.cluster.metrics import RunMetrics

            self.metrics = RunMetrics(self.run_name)
        except Exception as exc:  # noqa: BLE001 - metrics are optional, the search is not
            self.log(f"metrics disabled: {type(exc).__name__}: {exc}")
            self.metrics = None

    def _start_pool(self) -> None:
        import ray

        payload_ref = ray.put(self.task.payload())
        self.pool = EvaluatorPool(
            payload_ref=payload_ref, cluster=self.config.cluster,
            threads=self.config.hardware.threads, namespace=f"prunesearch-{self.run_name}",
            log=self.log,
        )

    def _ask(self) -> None:
        """Ask the next batch (or finish), then checkpoint. Nothing is evaluated before this
        checkpoint, so the journal never holds candidates the state does not know."""
        state = self.state
        remaining = self.budget - self.evaluations
        algorithm = state.algorithm
        if remaining <= 0 or not algorithm.has_next() or \
                state.idle_generations >= _MAX_IDLE_GENERATIONS:
            if state.idle_generations >= _MAX_IDLE_GENERATIONS:
                self.log(f"stopping: {state.idle_generations} generations in a row proposed only "
                         "genomes already evaluated")
            self._stop()
            return
        pop = algorithm.ask()
        for _ in range(_MAX_EMPTY_ASKS):
            # An empty ask with budget left: e.g. every genome asked was repaired onto a known
            # one (a device budget in a nearly exhausted space). Asking again draws anew.
            if len(pop) or not algorithm.has_next():
                break
            pop = algorithm.ask()
        if not len(pop):
            self.log(f"stopping: the algorithm proposed no new genome in {_MAX_EMPTY_ASKS + 1} "
                     "asks in a row")
            self._stop()
            return
        X = np.asarray(pop.get("X"), dtype=float)
        genomes = np.clip(np.rint(X), self.task.lower, self.task.upper).astype(int)
        # The algorithm learns from what was evaluated: the integer genome.
        pop.set("X", genomes)
        plan = plan_batch([tuple(g) for g in genomes], self.known, next_id=state.next_id,
                          remaining=remaining)
        if not plan.ids:  # an empty batch: nothing left to ask for
            self._stop()
            return
        state.pending = PendingBatch(generation=state.generation, pop=pop[list(plan.keep)],
                                     plan=plan)
        state.next_id += len(plan.new)
        self._save_state()

    def _stop(self) -> None:
        """End the search: nothing pending, finished, checkpointed."""
        self.state.pending = None
        self.state.finished = True
        self._save_state()

    def _run_generation(self) -> None:
        state = self.state
        pending = state.pending
        gen_start = time.perf_counter()
        evals_before = self.evaluations
        todo = self._unanswered()
        jobs = [PoolJob(candidate_id=cid, genome=g, seed=candidate_seed(self.config.seed, cid))
                for cid, g in todo]
        if jobs:
            self.pool.run(
                jobs, lambda job, result: self._on_result(job, result, pending.generation),
                failed_result=failed_result,
            )
        tell_batch(state.algorithm, pending.pop, pending.plan.ids, self.by_id, self.failed_F)
        state.generation = pending.generation + 1
        new = self.evaluations - evals_before
        state.idle_generations = 0 if pending.plan.new else state.idle_generations + 1
        self._ask()
        self.models.prune(self.front)
        gen_s = time.perf_counter() - gen_start
        hv = self._progress(new, gen_s)
        # Built from memory: re-reading the journal every generation would cost O(n^2).
        summary = search_summary(self.meta, status="running", evaluations=self.evaluations,
                                 failed=self.failed, hypervolume=hv, wall_s=self._wall_s(),
                                 generations=state.generation, front_size=len(self.front))
        write_summary(self.run_dir, summary)
        self._mirror()

    def _on_result(self, job: PoolJob, result: Mapping[str, Any], generation: int,
                   extra: Mapping[str, Any] | None = None) -> None:
        record = journal_record(
            candidate_id=job.candidate_id, generation=generation, genome=job.genome,
            result=result, channels=self.task.channels(job.genome),
            cheap_metrics=self.task.cheap_metrics([int(g) for g in job.genome]),
            hardware=self.hardware, attempt=job.attempt)
        if extra:  # async mode: the tell group (the journaled order resume replays)
            record.update(extra)
        # Weights are written before the journal line: a journaled front member always has its
        # model, also after a crash (a model of a result that then never got journaled is
        # overwritten when the candidate is evaluated again).
        f = objectives_of(record)
        if f is not None and not self.archive.dominated(f):
            self.models.save(record, result)
        if self.journal is None:
            self.journal = Journal(self.journal_path)
        self.archive.add(self.journal.append(record))
        self.session_evals += 1

    # ------------------------------------------------------------------ end of run
    def _measured_all(self) -> bool:
        return set(self.front) <= set(read_measured(self.run_dir))

    def _measure_front(self) -> None:
        """Re-time every front member end to end while no evaluation runs (the pool is idle).

        On a private local Ray instance with a CPU device the driver re-times, as it built the
        table: Ray runs its workers at niceness 15, so on a machine where anything else runs at
        niceness 0 an actor's timings are slowed (we measured up to 1.9x) where the driver's
        table and calibration were not (docs/METHODS.md, latency under load).
        """
        local_cpu = (self.local_ray and str(self.config.hardware.device).startswith("cpu"))
        on_actor = self.pool is not None and not local_cpu and self.pool.can_measure()
        measured = retime_front(
            self.run_dir, list(self.front), self.by_id, models=self.models,
            measure=self.pool.measure if on_actor else self.task.measure,
            where="an evaluator actor" if on_actor else "the driver", log=self.log,
            rounds=self.config.hardware.calibration_rounds,
            statistic=self.config.hardware.rounds_statistic)
        if measured is not None:
            self._check_table(measured)

    def _check_table(self, measured: Mapping[str, Mapping[str, float]]) -> None:
        """Warn when the search-time latency objective disagrees with end-to-end timing."""
        table = getattr(getattr(self, "task", None), "table", None)
        warning = table_warning(self.by_id, measured,
                                table.to_dict() if table is not None else None)
        if warning is not None:
            self.log(warning)

    # ------------------------------------------------------------------ reporting
    def _progress(self, new: int, gen_s: float) -> float | None:
        hv = front_hypervolume([self.by_id[i] for i in self.front], self.dense,
                               float(self.config.search.hv_max_error_increase))
        operator = getattr(self.state.algorithm, "last_operator", None)
        rate = new / gen_s if gen_s > 0 else 0.0
        hv_text = f"{hv:.4f}" if hv is not None else "-"
        if self.config.search.limits() and self.front:
            # Under a tight device budget the whole front may lie outside the HV reference
            # box (dense error + margin): HV reads 0 while the search improves.
            best = min(float(f[0]) for f in self.front.values())
            hv_text += f" | best error {best:.4f}"
        self.log(f"gen {self.state.generation} | evals {self.evaluations}/{self.budget} "
                 f"(failed {self.failed}) | front {len(self.front)} | HV {hv_text} | "
                 f"op {operator or self.config.method} | {rate:.2f} evals/s | "
                 f"{self._wall_s():.0f}s")
        if self.metrics is not None:
            try:
                self.metrics.update(generation=self.state.generation,
                                    evaluations=self.evaluations, failed=self.failed,
                                    hypervolume=hv, front_size=len(self.front),
                                    evals_per_s=rate, operator=operator)
            except Exception as exc:  # noqa: BLE001 - never stop a search for a dashboard
                self.log(f"metrics update failed: {type(exc).__name__}: {exc}")
        return hv

    def _mirror(self) -> None:
        if not self.storage_uri:
            return
        try:
            mirror_run(self.run_dir, self.storage_uri, log=self.log)
        except Exception as exc:  # noqa: BLE001 - the local run dir stays authoritative
            self.log(f"storage: mirroring to {self.storage_uri} failed: {type(exc).__name__}: {exc}")
