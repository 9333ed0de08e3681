"""The generational search driver: pymoo ask/tell on the driver, evaluations on Ray actors.

Per generation:

1. ``ask`` one batch from the algorithm. Genomes the journal already holds are answered from it
   (never evaluated or journaled twice, also when a batch repeats a genome); new genomes get
   global, increasing candidate ids in batch order; the last batch is truncated to the budget.
2. The algorithm (RNG included) and the asked batch are checkpointed atomically to
   ``state/driver.pkl`` *before* anything is evaluated.
3. New candidates are spread over the evaluator pool; each result is journaled (append, flush,
   fsync) as it arrives; weights of results that reach the current Pareto front are saved under
   ``models/`` before their journal line.
4. Once the whole batch is in, it is told back in candidate-id order (arrival order never
   changes a decision; failed candidates are infeasible and dominated). The next batch is asked
   and checkpointed, then models that left the front are deleted, a progress line is printed,
   metrics are published and the run directory is mirrored to ``storage``.

Resuming loads the checkpoint, reads the journal back (dropping a torn last line) and finishes
the checkpointed batch: candidates already journaled are answered from the journal, the rest
(in flight when the driver died) are evaluated again. With a deterministic evaluator a resumed
search ends with exactly the front of an uninterrupted one.

At the end every front member is re-timed end to end on an idle device and the report
(``pareto.csv``, ``pareto.png``, ``summary.json``) is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.cluster.actors import EvaluatorPool, PoolJob
from prunesearch.cluster.config import SEARCH_KEYS, JobConfig
from prunesearch.cluster.journal import (
    OBJECTIVE_NAMES,
    Journal,
    atomic_write_bytes,
    atomic_write_text,
    read_journal,
    to_jsonable,
)
from prunesearch.cluster.report import (
    front_hypervolume,
    objectives_of,
    read_measured,
    write_report,
    write_summary,
)
from prunesearch.cluster.storage import mirror_run, mirror_uri
from prunesearch.methods.errors import RunStateError
from prunesearch.methods.task import build_task, candidate_seed, failed_result
from prunesearch.search import GenomeProblem, make_algorithm
from prunesearch.search.base import mark_failed

__all__ = [
    "CHECKPOINT_PAUSE_ENV",
    "STATE_FILE",
    "BatchPlan",
    "candidate_seed",
    "connect_ray",
    "diff_search_keys",
    "plan_batch",
    "run_search",
    "save_model",
]

#: The checkpoint: algorithm + asked batch + driver bookkeeping (pickle, atomic).
STATE_FILE = "state/driver.pkl"
#: Test hook: seconds to sleep between writing the checkpoint's temp file and replacing the
#: checkpoint with it (lets a test SIGKILL the driver mid-checkpoint). Unset in normal use.
CHECKPOINT_PAUSE_ENV = "PRUNESEARCH_TEST_CHECKPOINT_PAUSE_S"
_STATE_VERSION = 1
#: Generations in a row whose whole batch was already evaluated before the search gives up
#: (the algorithm has converged onto known genomes; more asks would spin without evaluating).
_MAX_IDLE_GENERATIONS = 25


# ------------------------------------------------------------------------------------- Ray
def connect_ray(address: str | None, config: JobConfig) -> bool:
    """Connect this process to Ray.

    Joins the cluster named by ``address`` or ``RAY_ADDRESS``; otherwise starts a private local
    instance (``address="local"``: a bare ``ray.init()`` would silently join any head left
    running on the machine) that declares the custom ``evaluator`` resource for the pool.
    An already connected process is left as it is. Ray's token authentication stays as
    configured (on by default).

    Args:
        address: a Ray address (``ray://...``, ``host:port``, ``auto``) or ``None``.
        config: the job config (``cluster`` section: pool size, dashboard, object store).

    Returns:
        True if this call started a local Ray instance.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "local":
        ray.init(address=address, log_to_driver=True)
        return False
    cluster = config.cluster
    kwargs: dict[str, Any] = {
        "address": "local",
        "include_dashboard": bool(cluster.dashboard),
        "log_to_driver": True,
    }
    units = cluster.num_evaluators * cluster.evaluator_resource
    if units > 0:
        kwargs["resources"] = {"evaluator": float(units)}
    if cluster.object_store_mb:
        kwargs["object_store_memory"] = int(cluster.object_store_mb) * 1024 * 1024
    ray.init(**kwargs)
    return True


def diff_search_keys(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted config keys, under the search-defining sections, whose values differ.

    Args:
        saved: the resolved config of the run (``config_to_dict`` / ``config.yaml``).
        new: the config the run would be resumed with.

    Returns:
        Sorted keys such as ``["search.budget", "seed"]``; empty when resuming is allowed.
    """
    changed: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key), b.get(key), f"{prefix}.{key}")
        elif _plain(a) != _plain(b):
            changed.append(prefix)

    for key in SEARCH_KEYS:
        walk(saved.get(key), new.get(key), key)
    return sorted(changed)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# ------------------------------------------------------------------------------ batch plan
@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How one asked batch is answered.

    Attributes:
        keep: indices of the asked individuals that are told back (the tail beyond the budget
            is dropped).
        ids: for each kept individual, the candidate id that answers it (an earlier candidate
            for a known genome, a new id otherwise).
        new: (candidate id, genome) of the genomes to evaluate, in id order.
    """

    keep: tuple[int, ...]
    ids: tuple[int, ...]
    new: tuple[tuple[int, tuple[int, ...]], ...]


def plan_batch(genomes: Sequence[Sequence[int]], known: Mapping[tuple[int, ...], int], *,
               next_id: int, remaining: int) -> BatchPlan:
    """Assign candidate ids to an asked batch, answering known genomes from the archive.

    Args:
        genomes: the batch in asked order.
        known: genome -> candidate id of every journaled candidate.
        next_id: the first unused candidate id.
        remaining: evaluations left in the budget; new genomes beyond it are dropped.

    Returns:
        The plan; a genome repeated inside the batch is evaluated once and answers both.
    """
    if remaining < 0:
        raise ValueError(f"remaining must be >= 0, got {remaining!r}")
    keep: list[int] = []
    ids: list[int] = []
    new: list[tuple[int, tuple[int, ...]]] = []
    fresh: dict[tuple[int, ...], int] = {}
    for index, genome in enumerate(genomes):
        key = tuple(int(g) for g in genome)
        if key in known:
            cid = known[key]
        elif key in fresh:
            cid = fresh[key]
        elif len(new) < remaining:
            cid = next_id + len(new)
            fresh[key] = cid
            new.append((cid, key))
        else:
            continue
        keep.append(index)
        ids.append(cid)
    return BatchPlan(keep=tuple(keep), ids=tuple(ids), new=tuple(new))


# --------------------------------------------------------------------------------- logging
class _RunLog:
    """Prints a line and appends it, time-stamped, to ``driver.log``."""

    def __init__(self, path: Path, sink: Callable[[str], None]) -> None:
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run
        self._sink = sink

    def __call__(self, line: str) -> None:
        self._sink(line)
        if not self._handle.closed:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._handle.write(f"{stamp} {line}\n")
            self._handle.flush()

    def close(self) -> None:
        self._handle.close()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (``ray job stop``, a scheduler's kill) into KeyboardInterrupt, so the
    driver records the run as interrupted with its state saved."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------- checkpoints
class _ProblemRef:
    """Pickles the algorithm without its problem (which holds the task and its weights); the
    resumed driver plugs in the problem it rebuilt from the config."""

    _TOKEN = "prunesearch-problem"

    @classmethod
    def dumps(cls, state: Any, problem: Any) -> bytes:
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.persistent_id = lambda obj: cls._TOKEN if obj is problem else None  # type: ignore[method-assign]
        pickler.dump(state)
        return buffer.getvalue()

    @classmethod
    def loads(cls, data: bytes, problem: Any) -> Any:
        unpickler = pickle.Unpickler(io.BytesIO(data))

        def load(pid: Any) -> Any:
            if pid != cls._TOKEN:
                raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
            return problem

        unpickler.persistent_load = load  # type: ignore[method-assign]
        return unpickler.load()


def _checkpoint_pause(tmp: Path) -> None:
    pause = os.environ.get(CHECKPOINT_PAUSE_ENV)
    if pause:
        time.sleep(float(pause))


@dataclasses.dataclass
class _Pending:
    """The batch asked and checkpointed but not yet told."""

    generation: int
    pop: Any
    plan: BatchPlan


@dataclasses.dataclass
class _State:
    algorithm: Any
    pending: _Pending | None
    next_id: int = 0
    generation: int = 0  # completed (told) generations
    wall_s: float = 0.0
    idle_generations: int = 0
    finished: bool = False


# ---------------------------------------------------------------------------------- models
def save_model(models_dir: Path, record: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    """Keep one candidate's network: ``models/<id>.pt`` (its weights) and ``models/<id>.json``
    (genome, objectives, metrics, hardware and the recipe that rebuilds it), both atomically.
    ``export`` and ``finetune`` read them back."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    cid = int(record["id"])
    weights = result.get("weights")
    if weights:
        import torch

        buffer = io.BytesIO()
        # Copies: arrays from the object store are read-only, which torch warns about.
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, buffer)
        atomic_write_bytes(models_dir / f"{cid}.pt", buffer.getvalue())
    info = {"id": cid, "genome": record["genome"], "channels": record["channels"],
            "objectives": record["objectives"], "metrics": record["metrics"],
            "hardware": record["hardware"], "recipe": result.get("recipe"),
            "weights": f"{cid}.pt" if weights else None}
    atomic_write_text(models_dir / f"{cid}.json", json.dumps(to_jsonable(info), indent=1) + "\n")


# ---------------------------------------------------------------------------------- driver
def run_search(config: JobConfig, run_dir: Path, *, address: str | None = None,
               resume: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) a generational search and write its run directory.

    The caller (the CLI) creates ``run_dir`` and writes ``config.yaml``; this writes
    ``journal.jsonl``, ``state/``, ``models/``, ``driver.log``, ``pareto.csv``, ``pareto.png``
    and ``summary.json``, and mirrors them to ``config.storage`` when set.

    Args:
        config: the resolved job config (``method`` one of the generational searches).
        run_dir: the run directory.
        address: Ray cluster to join (default ``RAY_ADDRESS``, else a private local instance).
        resume: continue the search checkpointed in ``run_dir``.
        log: receives progress lines (also appended to ``driver.log``).

    Returns:
        The summary dict (as written to ``summary.json``); ``status`` is ``complete``, or
        ``interrupted`` after KeyboardInterrupt/SIGTERM (state saved, resumable).

    Raises:
        ValueError: ``resume`` is False but ``run_dir`` already holds a search, or the
            checkpoint does not match the journal.
    """
    import ray

    run_dir = Path(run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_log = _RunLog(run_dir / "driver.log", log)
    was_connected = ray.is_initialized()
    try:
        # The task (base model, latency table, dense objectives) is built before Ray starts:
        # bad input fails in seconds with nothing started, and the table is timed while no
        # evaluator runs on this device.
        driver = _Driver(config, run_dir, resume=resume, log=run_log)
        connect_ray(address, config)
        return driver.run()
    finally:
        if not was_connected and ray.is_initialized():
            ray.shutdown()
        run_log.close()


class _Driver:
    def __init__(self, config: JobConfig, run_dir: Path, *, resume: bool,
                 log: Callable[[str], None]) -> None:
        self.config = config
        self.run_dir = run_dir
        self.log = log
        self.session_start = time.perf_counter()
        self.state_path = run_dir / STATE_FILE
        self.journal_path = run_dir / "journal.jsonl"
        self.models_dir = run_dir / "models"
        self.budget = int(config.search.budget)
        records = read_journal(self.journal_path, log=log) if resume else []
        if not resume and (self.state_path.exists() or _non_empty(self.journal_path)):
            raise RunStateError(f"run directory '{run_dir}' already holds a search; resume it "
                             "instead (run_search(..., resume=True) / prunesearch resume)")
        started = time.perf_counter()
        if config.evaluator.kind == "synthetic":
            log("preparing the synthetic task ...")
        else:
            log(f"preparing the {config.model.name} task: base model, data, latency table "
                "(timed once, then cached), dense objectives ...")
        self.task = build_task(config, run_dir)
        self.dense = {k: float(v) for k, v in self.task.dense_objectives().items()}
        log(f"task ready in {time.perf_counter() - started:.0f}s: {len(self.task.lower)} genes; "
            f"dense error {self.dense['error']:.4f}, latency {self.dense['latency_ms']:.3f} ms, "
            f"memory {self.dense['memory_mb']:.2f} MB")
        # No hv_ref here on purpose: HAMP's internal indicator (operator credit, move ranking)
        # then normalises by the archive's ideal and nadir, which has signal even before any
        # candidate enters the reported reference box (dense error + margin); see METHODS.md.
        self.problem = GenomeProblem(
            self.task.lower, self.task.upper, n_obj=3,
            cheap_objectives=self.task.cheap_objectives, cheap_fn=self.task.evaluate_cheap,
        )
        # Failed candidates are told twice the reference point on every axis: infeasible and
        # dominated by every useful result, yet finite and on the scale of the real objectives
        # (a huge penalty would squash indicator-based selections that normalise by range).
        hv_inc = float(config.search.hv_max_error_increase)
        self.failed_F = 2.0 * np.array([self.dense["error"] + hv_inc, self.dense["latency_ms"],
                                        self.dense["memory_mb"]])
        self.hardware = {"device": config.hardware.device, "runtime": config.hardware.runtime,
                         "dtype": config.hardware.dtype, "batch_size": config.hardware.batch_size}

        meta = self._read_meta()
        self.run_name = meta.get("run_name") or run_dir.name
        self.storage_uri = mirror_uri(config.storage, self.run_name) if config.storage else None
        self._write_meta()

        self.by_id: dict[int, dict[str, Any]] = {}
        self.known: dict[tuple[int, ...], int] = {}
        self.front: dict[int, np.ndarray] = {}
        for record in records:
            self._remember(record)
        self.state = self._load_state() if resume else None
        if self.state is None:
            if records:
                raise RunStateError(f"'{run_dir}' has {len(records)} journaled candidates but no "
                                 f"checkpoint ({STATE_FILE}): cannot resume")
            algorithm = make_algorithm(config.method, config.search)
            from pymoo.termination.max_eval import MaximumFunctionCallTermination

            # pymoo's own counter does not move in a hand-driven ask/tell loop: the driver counts
            # journaled evaluations itself; the search layer's algorithms also read this
            # termination to cut their batches to the budget.
            algorithm.setup(self.problem, termination=MaximumFunctionCallTermination(self.budget),
                            seed=int(config.seed), verbose=False)
            self.state = _State(algorithm=algorithm, pending=None)
        else:
            stray = [cid for cid in self.by_id if cid >= self.state.next_id]
            if stray:
                raise RunStateError(f"journal holds candidates {stray[:5]} newer than the checkpoint "
                                 f"(next id {self.state.next_id}): journal and state do not match")
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
        return len(self.by_id)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.by_id.values() if r["status"] != "ok")

    def _remember(self, record: dict[str, Any]) -> bool:
        """Add a journaled record to the archive; return True if it joined the front."""
        cid = int(record["id"])
        if cid in self.by_id:
            raise RunStateError(f"journal holds candidate {cid} twice")
        self.by_id[cid] = record
        self.known[tuple(int(g) for g in record["genome"])] = cid
        f = objectives_of(record)
        if f is None:
            return False
        return self._front_add(cid, f)

    def _front_add(self, cid: int, f: np.ndarray) -> bool:
        for other in self.front.values():
            if np.all(other <= f) and np.any(other < f):
                return False
        for other_id in [i for i, g in self.front.items() if np.all(f <= g) and np.any(f < g)]:
            del self.front[other_id]
        self.front[cid] = f
        return True

    def _dominated_by_front(self, f: np.ndarray) -> bool:
        return any(np.all(g <= f) and np.any(g < f) for g in self.front.values())

    def _unanswered(self) -> list[tuple[int, tuple[int, ...]]]:
        pending = self.state.pending if self.state else None
        if pending is None:
            return []
        return [(cid, g) for cid, g in pending.plan.new if cid not in self.by_id]

    def _read_meta(self) -> dict[str, Any]:
        path = self.run_dir / "state" / "meta.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _write_meta(self) -> None:
        meta = {
            "run_name": self.run_name,
            "method": self.config.method,
            "budget": self.budget,
            "dense": self.dense,
            "hv_max_error_increase": float(self.config.search.hv_max_error_increase),
            "storage_uri": self.storage_uri,
            "hardware": self.hardware,
            "objectives": list(OBJECTIVE_NAMES),
        }
        atomic_write_text(self.run_dir / "state" / "meta.json", json.dumps(meta, indent=2) + "\n")

    def _wall_s(self) -> float:
        return self.state.wall_s + (time.perf_counter() - self.session_start)

    # ------------------------------------------------------------------ checkpoints
    def _save_state(self) -> None:
        state = dataclasses.replace(self.state, wall_s=self._wall_s())
        data = _ProblemRef.dumps({"version": _STATE_VERSION, "state": state}, self.problem)
        atomic_write_bytes(self.state_path, data, before_replace=_checkpoint_pause)

    def _load_state(self) -> _State | None:
        if not self.state_path.exists():
            return None
        saved = _ProblemRef.loads(self.state_path.read_bytes(), self.problem)
        if saved.get("version") != _STATE_VERSION:
            raise RunStateError(f"{self.state_path} has state version {saved.get('version')!r}; "
                             f"this prunesearch reads version {_STATE_VERSION}")
        return saved["state"]

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        status = "failed"
        error: BaseException | None = None
        try:
            with _sigterm_as_interrupt():
                self._start_metrics()
                if self.state.pending is None and not self.state.finished:
                    self._ask()
                if self.state.pending is not None or not self._measured_all():
                    self._start_pool()
                while self.state.pending is not None:
                    self._run_generation()
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
            state.pending = None
            state.finished = True
            self._save_state()
            return
        pop = algorithm.ask()
        X = np.asarray(pop.get("X"), dtype=float)
        genomes = np.clip(np.rint(X), self.task.lower, self.task.upper).astype(int)
        # The algorithm learns from what was evaluated: the integer genome.
        pop.set("X", genomes)
        plan = plan_batch([tuple(g) for g in genomes], self.known, next_id=state.next_id,
                          remaining=remaining)
        if not plan.ids:  # an empty batch: nothing left to ask for
            state.pending = None
            state.finished = True
            self._save_state()
            return
        state.pending = _Pending(generation=state.generation, pop=pop[list(plan.keep)], plan=plan)
        state.next_id += len(plan.new)
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
        self._tell(pending)
        state.generation = pending.generation + 1
        new = self.evaluations - evals_before
        state.idle_generations = 0 if pending.plan.new else state.idle_generations + 1
        self._ask()
        self._prune_models()
        gen_s = time.perf_counter() - gen_start
        hv = self._progress(new, gen_s)
        # Built from memory: re-reading the journal every generation would cost O(n^2).
        summary = {
            "method": self.config.method, "status": "running", "evaluations": self.evaluations,
            "failed": self.failed, "hypervolume": hv, "wall_s": round(self._wall_s(), 3),
            "generations": state.generation, "front_size": len(self.front),
            "budget": self.budget, "dense": self.dense, "run_name": self.run_name,
        }
        if self.storage_uri:
            summary["storage_uri"] = self.storage_uri
        write_summary(self.run_dir, summary)
        self._mirror()

    def _on_result(self, job: PoolJob, result: Mapping[str, Any], generation: int) -> None:
        genome = [int(g) for g in job.genome]
        objectives = dict(result.get("objectives") or {})
        status = result.get("status", "failed")
        reason = result.get("reason")
        values = [objectives.get(k) for k in OBJECTIVE_NAMES]
        if status == "ok" and any(v is None or not math.isfinite(float(v)) for v in values):
            status, reason = "failed", f"non-finite objectives {values}"
        if status != "ok":
            status = "failed"
            reason = reason or "evaluator reported failure without a reason"
        metrics = {k: v for k, v in self.task.cheap_metrics(genome).items()}
        metrics.update(result.get("metrics") or {})
        record = {
            "id": job.candidate_id,
            "generation": generation,
            "genome": genome,
            "channels": [int(c) for c in self.task.channels(genome)],
            "status": status,
            "reason": reason,
            "objectives": {k: objectives.get(k) for k in OBJECTIVE_NAMES},
            "metrics": metrics,
            "hardware": self.hardware,
            "attempt": job.attempt,
            "wall_s": float(result.get("wall_s") or 0.0),
        }
        if status == "ok":
            f = np.asarray(values, dtype=float)
            # Weights are written before the journal line: a journaled front member always has
            # its model, also after a crash (a model of a result that then never got journaled
            # is overwritten when the candidate is evaluated again).
            if not self._dominated_by_front(f):
                self._save_model(record, result)
        if self.journal is None:
            self.journal = Journal(self.journal_path)
        stored = self.journal.append(record)
        self._remember(stored)
        self.session_evals += 1

    def _tell(self, pending: _Pending) -> None:
        F = np.empty((len(pending.plan.ids), 3))
        failed = np.zeros(len(pending.plan.ids), dtype=bool)
        for row, cid in enumerate(pending.plan.ids):
            f = objectives_of(self.by_id[cid])
            if f is None:
                F[row], failed[row] = self.failed_F, True
            else:
                F[row] = f
        pop = pending.pop
        empty = np.zeros((len(pop), 0))
        pop.set("F", F, "G", empty, "H", empty)
        for ind in pop:
            ind.CV = np.array([0.0])
            ind.evaluated.update({"F", "G", "H"})
        # The search layer's convention: failed candidates are infeasible, archived (never
        # proposed again) and never selected.
        mark_failed(pop, failed)
        self.state.algorithm.tell(infills=pop)

    # ------------------------------------------------------------------ models
    def _save_model(self, record: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        save_model(self.models_dir, record, result)

    def _prune_models(self) -> None:
        if not self.models_dir.exists():
            return
        for path in self.models_dir.iterdir():
            stem = path.name.split(".", 1)[0]
            if stem.isdigit() and int(stem) not in self.front:
                path.unlink(missing_ok=True)

    def _load_weights(self, cid: int) -> dict[str, np.ndarray] | None:
        path = self.models_dir / f"{cid}.pt"
        if not path.exists():
            return None
        import torch

        return {k: v.numpy() for k, v in torch.load(path, map_location="cpu").items()}

    # ------------------------------------------------------------------ end of run
    def _measured_all(self) -> bool:
        return set(self.front) <= set(read_measured(self.run_dir))

    def _measure_front(self) -> None:
        """Re-time every front member end to end while no evaluation runs (the pool is idle)."""
        measured = {str(k): v for k, v in read_measured(self.run_dir).items()}
        todo = sorted(cid for cid in self.front if str(cid) not in measured)
        if not todo:
            return
        on_actor = self.pool is not None and self.pool.can_measure()
        where = "an evaluator actor" if on_actor else "the driver"
        self.log(f"re-timing {len(todo)} front members end to end on {where}")
        for cid in todo:
            genome = self.by_id[cid]["genome"]
            weights = self._load_weights(cid)
            timing = (self.pool.measure(genome, weights) if on_actor
                      else self.task.measure(genome, weights))
            measured[str(cid)] = {k: float(v) for k, v in dict(timing).items()}
            atomic_write_text(self.run_dir / "state" / "measured.json",
                              json.dumps(measured, indent=1) + "\n")
        self._check_table(measured)

    def _check_table(self, measured: Mapping[str, Mapping[str, float]]) -> None:
        """Warn when the search-time latency objective disagrees with end-to-end timing.

        The table is calibrated once, at start-up; if the device was busy then (or is now),
        every table latency is off by the same factor and the user should know before trusting
        absolute figures (the ranking usually survives).
        """
        errors = []
        for key, timing in measured.items():
            record = self.by_id.get(int(key))
            table_ms = (record or {}).get("objectives", {}).get("latency_ms")
            real_ms = timing.get("latency_ms_measured")
            if table_ms and real_ms:
                errors.append(abs(table_ms - real_ms) / real_ms)
        if errors and float(np.median(errors)) > TABLE_WARN_ERROR:
            self.log(f"warning: the latency table is off by a median {np.median(errors):.0%} "
                     "against end-to-end timings of the front (latency_ms vs "
                     "latency_ms_measured in pareto.csv); the device was probably busy while "
                     "the table was built or calibrated. Trust latency_ms_measured; for the "
                     "next run keep the device idle during start-up (and delete "
                     "$PRUNESEARCH_CACHE/latency, default ~/.cache/prunesearch/latency, to "
                     "re-time the cached entries).")

    # ------------------------------------------------------------------ reporting
    def _progress(self, new: int, gen_s: float) -> float | None:
        hv = front_hypervolume([self.by_id[i] for i in self.front], self.dense,
                               float(self.config.search.hv_max_error_increase))
        operator = getattr(self.state.algorithm, "last_operator", None)
        rate = new / gen_s if gen_s > 0 else 0.0
        hv_text = f"{hv:.4f}" if hv is not None else "-"
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


#: Median relative table error against end-to-end timings above which the driver warns.
TABLE_WARN_ERROR = 0.20


def _non_empty(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0
