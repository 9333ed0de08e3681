"""The runner of ``method: halp``: one HALP network per latency target, on Ray.

1. The task is built on the driver while nothing else runs (base model, genome space, the
   calibrated latency table, saved as ``latency_table.json``; the dense objectives). Targets
   are resolved to ms of table latency and refused, before Ray starts, if unreachable.
2. Every unfinished target runs :func:`~prunesearch.methods.halp.prune_to_latency` as one Ray
   task (holding the custom ``evaluator`` resource, like the search's actors), at most
   ``cluster.num_evaluators`` at a time. Each finished target is checkpointed at once: its
   network under ``models/<id>`` (the search driver's format, so ``export`` and ``finetune``
   read it) and then its line in ``journal.jsonl`` (id = the target's index). ``resume`` skips
   every journaled target.
3. With all targets in, each network is re-timed end to end on the driver, one at a time, on the
   now idle device (``state/measured.json``), and ``pareto.csv`` (one row per target, the
   search's columns), ``pareto.png`` and ``summary.json`` are written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.cluster.actors import resource_options
from prunesearch.cluster.driver import (
    _RunLog,
    _sigterm_as_interrupt,
    candidate_seed,
    connect_ray,
    save_model,
)
from prunesearch.cluster.journal import (
    OBJECTIVE_NAMES,
    Journal,
    read_journal,
    to_jsonable,
)
from prunesearch.cluster.report import (
    front_hypervolume,
    front_records,
    objectives_of,
    read_measured,
    write_pareto_csv,
    write_pareto_png,
    write_summary,
)
from prunesearch.cluster.retime import retime_front
from prunesearch.cluster.run_store import ModelStore, write_meta
from prunesearch.methods.errors import RunStateError, UsageError

__all__ = ["resolve_targets", "run_halp"]


def resolve_targets(config: Any, dense_ms: float, floor_ms: float) -> list[float]:
    """The ``halp.latency_targets`` in ms of table latency.

    Raises:
        UsageError: a target is below the smallest network's latency or not below the dense
            latency (the message names it and the reachable range).
    """
    from prunesearch.methods.halp import target_latency_ms

    h = config.halp
    targets = [target_latency_ms(t, h.target_unit, dense_ms) for t in h.latency_targets]
    for raw, ms in zip(h.latency_targets, targets):
        if not floor_ms <= ms < dense_ms:
            raise UsageError(
                f"halp.latency_targets: {raw} ({ms:.4f} ms) is outside the reachable table "
                f"latencies [{floor_ms:.4f}, {dense_ms:.4f}) ms of {config.model.source} "
                f"({floor_ms / dense_ms:.3f} to 1 of dense)")
    return targets


def _halp_target(payload: dict[str, Any], settings: Any, target_ms: float, seed: int,
                 threads: int, index: int | None = None) -> dict[str, Any]:
    """One target's HALP run (on a Ray worker): a result dict in the evaluator's format. Each
    pruning step prints a line (Ray forwards a worker's output to the driver's terminal)."""
    import torch

    from prunesearch.methods.evaluator import CandidateEvaluator
    from prunesearch.methods.halp import prune_to_latency

    start = time.perf_counter()
    torch.set_num_threads(int(threads))
    try:
        evaluator = CandidateEvaluator(payload)
        bundle = evaluator.bundle
        cost = evaluator.cost
        result = prune_to_latency(
            evaluator.base_model, evaluator.space, lambda g: cost.evaluate(g)["latency_ms"],
            bundle.train, bundle.val, target_ms=target_ms, settings=settings, seed=seed,
            augment=settings.augmentation and bundle.augmentable,
            device=payload["hardware"].device, base_checkpoint=payload.get("base_checkpoint"),
            log=lambda line: print(f"target {index}: {line}", flush=True))
    except Exception as exc:  # noqa: BLE001 - one failed target must not lose the others
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                "wall_s": time.perf_counter() - start}
    figures = cost.evaluate(np.asarray(result.genome)[None, :])
    return {
        "status": "ok", "reason": None, "genome": list(result.genome),
        "objectives": {"error": result.val_error, "latency_ms": result.latency_ms,
                       "memory_mb": float(figures["memory_mb"][0])},
        "metrics": {"macs": int(figures["macs"][0]), "params": int(figures["params"][0]),
                    "val_acc": 1.0 - result.val_error, "target_ms": float(target_ms),
                    "latency_table_raw_ms": float(figures["latency_raw_ms"][0]),
                    "halp_steps": result.history},
        "weights": {k: v.detach().cpu().numpy() for k, v in result.module.state_dict().items()},
        "recipe": result.recipe, "wall_s": time.perf_counter() - start,
    }


def run_halp(config: Any, run_dir: Path, *, address: str | None = None, resume: bool = False,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) HALP at every ``halp.latency_targets`` and write the run directory.

    Args:
        config: the resolved job config (``method: halp``).
        run_dir: the run directory (``config.yaml`` is the caller's).
        address: Ray cluster to join (default ``RAY_ADDRESS``, else a private local instance).
        resume: continue a run: targets already journaled are kept, the rest are run.
        log: receives progress lines (also appended to ``driver.log``).

    Returns:
        The summary (as in ``summary.json``): ``method``, ``status``
        (complete|failed|interrupted), ``evaluations`` (targets done), ``failed``,
        ``front_size``, ``hypervolume``, ``targets_ms``, ``dense``, ``wall_s``.
    """
    import ray

    run_dir = Path(run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_log = _RunLog(run_dir / "driver.log", log)
    was_connected = ray.is_initialized()
    try:
        runner = _HALPRunner(config, run_dir, resume=resume, log=run_log)
        return runner.run(address)
    finally:
        if not was_connected and ray.is_initialized():
            ray.shutdown()
        run_log.close()


class _HALPRunner:
    def __init__(self, config: Any, run_dir: Path, *, resume: bool,
                 log: Callable[[str], None]) -> None:
        from prunesearch.methods.task import build_task

        self.config, self.run_dir, self.log = config, run_dir, log
        self.session_start = time.perf_counter()
        self.journal_path = run_dir / "journal.jsonl"
        records = read_journal(self.journal_path, log=log) if resume else []
        if not resume and self.journal_path.exists() and self.journal_path.stat().st_size:
            raise RunStateError(f"run directory '{run_dir}' already holds a HALP run; resume it "
                                "instead (run_halp(..., resume=True) / prunesearch resume)")
        self.previous_wall_s = 0.0
        if resume and (run_dir / "summary.json").exists():
            self.previous_wall_s = float(json.loads((run_dir / "summary.json").read_text())
                                         .get("wall_s") or 0.0)
        if config.evaluator.kind != "finetune":
            raise UsageError("method 'halp' prunes real networks: evaluator.kind must be "
                             f"'finetune', not '{config.evaluator.kind}'")
        log(f"preparing the {config.model.source} task for HALP: base model, data, latency "
            "table, dense objectives ...")
        self.task = build_task(config, run_dir)
        self.dense = {k: float(v) for k, v in self.task.dense_objectives().items()}
        lat = self.task.cost.evaluate(np.stack([self.task.upper, self.task.lower]))["latency_ms"]
        self.targets = resolve_targets(config, float(lat[0]), float(lat[1]))
        self.hardware = {"device": config.hardware.device, "runtime": config.hardware.runtime,
                         "dtype": config.hardware.dtype, "batch_size": config.hardware.batch_size}
        self.records = {int(r["id"]): r for r in records}
        stray = [cid for cid in self.records if cid >= len(self.targets)]
        if stray:
            raise RunStateError(f"journal holds targets {stray} but the config has "
                                f"{len(self.targets)}: not this run's journal")
        self._write_meta()
        log("HALP targets: " + ", ".join(f"{t:.4f} ms" for t in self.targets)
            + f" (dense table latency {float(lat[0]):.4f} ms)"
            + (f"; {len(self.records)} already done" if self.records else ""))

    def _write_meta(self) -> None:
        meta = {"run_name": self.run_dir.name, "method": "halp", "budget": len(self.targets),
                "dense": self.dense,
                "hv_max_error_increase": float(self.config.search.hv_max_error_increase),
                "storage_uri": None, "hardware": self.hardware,
                "objectives": list(OBJECTIVE_NAMES), "targets_ms": self.targets}
        write_meta(self.run_dir, meta)

    def _wall_s(self) -> float:
        return self.previous_wall_s + time.perf_counter() - self.session_start

    # ------------------------------------------------------------------ main loop
    def run(self, address: str | None) -> dict[str, Any]:
        status, error = "failed", None
        try:
            with _sigterm_as_interrupt():
                todo = [i for i in range(len(self.targets)) if i not in self.records]
                if todo:
                    connect_ray(address, self.config)
                    self._run_targets(todo)
                self._measure()
                ok = [r for r in self.records.values() if r["status"] == "ok"]
                status = "complete" if ok else "failed"
        except KeyboardInterrupt:
            status = "interrupted"
            self.log(f"interrupted: finished targets are saved in {self.run_dir}; continue with "
                     f"'prunesearch resume {self.run_dir}'")
        except BaseException as exc:  # noqa: BLE001 - recorded in summary.json, then re-raised
            error = exc
            self.log(f"HALP failed: {type(exc).__name__}: {exc}")
        finally:
            summary = self._finish(status)
        if error is not None:
            raise error
        return summary

    def _run_targets(self, todo: list[int]) -> None:
        import ray

        cluster = self.config.cluster
        options = {**resource_options(cluster), "max_retries": cluster.max_retries}
        remote = ray.remote(_halp_target).options(**options)
        payload_ref = ray.put(self.task.payload())
        threads = self.config.hardware.threads
        pending: dict[Any, int] = {}
        queue = list(todo)
        journal = Journal(self.journal_path)
        try:
            while queue or pending:
                while queue and len(pending) < cluster.num_evaluators:
                    index = queue.pop(0)
                    ref = remote.remote(payload_ref, self.config.halp, self.targets[index],
                                        candidate_seed(self.config.seed, index), threads,
                                        index=index)
                    pending[ref] = index
                    self.log(f"target {index}: {self.targets[index]:.4f} ms submitted")
                done, _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                try:
                    result = ray.get(done[0])
                except ray.exceptions.RayError as exc:
                    result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
                self._record(journal, index, result)
        finally:
            journal.close()

    def _record(self, journal: Journal, index: int, result: Mapping[str, Any]) -> None:
        ok = result.get("status") == "ok"
        genome = [int(g) for g in result.get("genome") or self.task.upper.tolist()]
        record = {
            "id": index, "generation": 0, "genome": genome,
            "channels": [int(c) for c in self.task.channels(genome)],
            "status": "ok" if ok else "failed", "reason": result.get("reason"),
            "objectives": dict(result.get("objectives") or dict.fromkeys(OBJECTIVE_NAMES)),
            "metrics": {"target_ms": self.targets[index], **(result.get("metrics") or {})},
            "hardware": self.hardware, "attempt": 1,
            "wall_s": float(result.get("wall_s") or 0.0),
        }
        if ok:
            save_model(self.run_dir / "models", record, result)  # before its journal line
        stored = journal.append(to_jsonable(record))
        self.records[index] = stored
        if ok:
            o = record["objectives"]
            self.log(f"target {index} done: table {o['latency_ms']:.4f} ms (target "
                     f"{self.targets[index]:.4f}), val error {o['error']:.4f}, "
                     f"{record['wall_s']:.0f}s")
        else:
            self.log(f"target {index} failed: {record['reason']}")

    def _measure(self) -> None:
        """Re-time every finished network end to end on the idle device, in passes over all of
        them (:func:`~prunesearch.cluster.retime.retime_front`)."""
        done = {i: r for i, r in self.records.items() if r["status"] == "ok"}
        measured = retime_front(
            self.run_dir, sorted(done), done, models=ModelStore(self.run_dir / "models"),
            measure=self.task.measure, where="the driver", log=self.log,
            rounds=self.config.hardware.calibration_rounds,
            statistic=self.config.hardware.rounds_statistic)
        for index in sorted(done) if measured is not None else ():
            timing = measured[str(index)]
            self.log(f"target {index}: measured {timing['latency_ms_measured']:.4f} ms end to "
                     f"end (table {done[index]['objectives']['latency_ms']:.4f} ms)")

    def _finish(self, status: str) -> dict[str, Any]:
        records = [self.records[i] for i in sorted(self.records)]
        ok = [r for r in records if objectives_of(r) is not None]
        measured = read_measured(self.run_dir)
        hv = front_hypervolume(front_records(ok), self.dense,
                               float(self.config.search.hv_max_error_increase))
        # One row per target (a HALP network is a result even where another target's
        # network dominates it).
        write_pareto_csv(self.run_dir / "pareto.csv", ok, measured)
        hv_text = f", HV {hv:.4f}" if hv is not None else ""
        write_pareto_png(self.run_dir / "pareto.png", ok, ok,
                         title=f"halp: {len(ok)} of {len(self.targets)} targets{hv_text}")
        summary = {
            "method": "halp", "status": status, "evaluations": len(records),
            "failed": len(records) - len(ok), "hypervolume": hv,
            "wall_s": round(self._wall_s(), 3), "generations": 0, "front_size": len(ok),
            "budget": len(self.targets), "targets_ms": self.targets, "dense": self.dense,
            "run_name": self.run_dir.name,
        }
        write_summary(self.run_dir, summary)
        if status == "complete":
            self.log(f"HALP complete: {len(ok)} of {len(self.targets)} targets, "
                     + (f"HV {hv:.4f}, " if hv is not None else "") + f"{self._wall_s():.0f}s")
        return summary
