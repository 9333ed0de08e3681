"""The report of a trial-based run: ``results.csv``, ``summary.json`` and, for pruning methods,
``pareto.csv``/``pareto.png``, all derived from the run directory alone (the trials'
``result.json`` files of every attempt's experiment under ``tune/``, read as data by
:mod:`tune_state`, and ``trials.json``), so ``prunesearch report`` re-renders them at any time.
Also the helpers the runner and the report share.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prunesearch.cluster.config import JobConfig, load_config
from prunesearch.cluster.registry import method_entry, resolve
from prunesearch.cluster.tune_state import EXPERIMENT_NAME, RESUME_KEY, iter_trial_results
from prunesearch.methods.errors import UsageError
from prunesearch.methods.io import atomic_write_text
from prunesearch.methods.trial import TrialMethod

__all__ = ["EXPERIMENT_NAME", "report_trials", "trial_method_of"]

_OBJECTIVES = ("error", "latency_ms", "memory_mb")


def trial_method_of(config: JobConfig) -> TrialMethod:
    """The :class:`TrialMethod` of ``config.method`` (a ``trials`` entry of the registry)."""
    entry = method_entry(config.method)
    if entry.kind != "trials" or not entry.trial_method:
        raise UsageError(f"method '{config.method}' does not run as Tune trials")
    spec = resolve(entry.trial_method)
    if not isinstance(spec, TrialMethod):
        raise TypeError(f"{entry.trial_method} is a {type(spec).__name__}, not a TrialMethod")
    return spec


def metrics_and_modes(config: JobConfig, spec: TrialMethod) -> tuple[list[str], list[str]]:
    if config.tune.metrics:
        return list(config.tune.metrics), list(config.tune.modes)
    return [spec.metric], [spec.mode]


def jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _read_rows(tune_root: Path) -> list[dict[str, Any]]:
    """Every reported row of every trial of every attempt, from the trials' ``result.json``
    files (a continued trial's steps under the id of the trial it continues)."""
    rows: dict[tuple[str, Any], dict[str, Any]] = {}
    for _, _, trial_id, _, results in iter_trial_results(tune_root):
        for result in results:
            row: dict[str, Any] = {"trial_id": trial_id}
            config = result.get("config")
            for key, value in (config if isinstance(config, dict) else {}).items():
                if key != RESUME_KEY:
                    row[key] = value
            for key, value in result.items():
                if key in ("config", "trial_id", "final", "done") or key in _TUNE_KEYS:
                    continue
                if isinstance(value, (int, float, str, bool)) or value is None:
                    row[key] = value
            rows[(trial_id, result.get("step", result.get("training_iteration")))] = row
    return list(rows.values())


#: Bookkeeping Tune adds to every result; not written to results.csv.
_TUNE_KEYS = frozenset({
    "timestamp", "checkpoint_dir_name", "should_checkpoint", "training_iteration", "date",
    "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
    "iterations_since_restore", "experiment_tag",
})


def _write_results_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (str(r["trial_id"]), _num(r.get("step")))):
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else -1.0


def _final_records(trials: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Final networks as journal-like records (``pareto.csv``/``pareto.png`` read these)."""
    records = []
    for index, trial in enumerate(trials):
        final = trial.get("final")
        if not final or any(not isinstance(final.get(k), (int, float)) for k in _OBJECTIVES):
            continue
        records.append({
            "id": index,
            "trial_id": trial["trial_id"],
            "status": "ok",
            "genome": list(final.get("genome") or []),
            "objectives": {k: float(final[k]) for k in _OBJECTIVES},
            "metrics": {"macs": final.get("macs"), "flops": final.get("macs"),
                        "params": final.get("params")},
            "latency_ms_measured": final.get("latency_ms_measured"),
        })
    return records


def _save_networks(run_dir: Path, spec: TrialMethod, front: Sequence[Mapping[str, Any]],
                   config: JobConfig) -> None:
    """``models/<id>.json`` and ``models/<id>.pt`` of each front member, read from its trial's
    last checkpoint (as a search keeps its front's networks), for ``export`` and ``finetune``.
    A member already saved from the same trial is left as it is; a trial whose checkpoint is
    missing or damaged is skipped (``export`` then says it has no saved model)."""
    from prunesearch.cluster.run_store import save_model
    from prunesearch.cluster.tune_state import STATE_FILE, load_state, read_trials
    from prunesearch.methods.errors import PrunesearchError

    models = run_dir / "models"
    records = None
    hardware = {k: getattr(config.hardware, k) for k in ("device", "runtime", "dtype",
                                                          "batch_size")}
    for member in front:
        info_path = models / f"{member['id']}.json"
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(info_path.read_text())
            if (saved.get("trial_id") == member["trial_id"]
                    and (models / f"{member['id']}.pt").exists()):
                continue
        if records is None:
            records = read_trials(run_dir / "tune")
        record = records.get(member["trial_id"])
        if record is None or not record.done or record.checkpoint is None:
            continue
        try:
            network = spec.network(load_state(str(record.checkpoint / STATE_FILE)))
        except PrunesearchError:
            continue
        if network is None:
            continue
        recipe, state = network
        final = record.final or {}
        entry = {"id": member["id"], "genome": member["genome"],
                 "channels": final.get("channels"), "objectives": member["objectives"],
                 "metrics": member["metrics"], "hardware": hardware,
                 "trial_id": member["trial_id"]}
        save_model(models, entry, {"recipe": dict(recipe),
                                   "weights": {k: v.cpu().numpy() for k, v in state.items()}})


def report_trials(run_dir: Path, *, status: str | None = None, wall_s: float | None = None,
                  config: JobConfig | None = None) -> dict[str, Any]:
    """Write ``results.csv``, ``summary.json`` and (pruning methods) ``pareto.csv``/``.png``
    from the run directory alone (``prunesearch report`` calls it with the run directory)."""
    from prunesearch.cluster.report import (
        front_records,
        write_pareto_csv,
        write_pareto_png,
        write_summary,
    )

    run_dir = Path(run_dir)
    if config is None:
        import yaml

        config = load_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    spec = trial_method_of(config)
    metrics, modes = metrics_and_modes(config, spec)
    previous: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads((run_dir / "summary.json").read_text())
    rows = _read_rows(run_dir / "tune")
    if rows:
        _write_results_csv(run_dir / "results.csv", rows)
    trials: list[dict[str, Any]] = []
    with contextlib.suppress(OSError, ValueError):
        trials = json.loads((run_dir / "trials.json").read_text())
    best = _best_trial(trials, rows, metrics[0], modes[0])
    counts = {s: sum(1 for t in trials if t["status"] == s)
              for s in ("complete", "failed", "unfinished")}
    summary: dict[str, Any] = {
        "method": config.method,
        "status": status or previous.get("status", "running"),
        "wall_s": round(float(wall_s if wall_s is not None else previous.get("wall_s", 0.0)), 3),
        "trials": {"total": len(trials) or len({r["trial_id"] for r in rows}), **counts},
        "metric": metrics[0],
        "mode": modes[0],
        "best_trial": best,
        "run_name": run_dir.name,
    }
    if spec.summarize is not None and rows:
        summary["method_summary"] = jsonable(spec.summarize(rows))
    if spec.pruning:
        records = _final_records(trials)
        front = front_records(records)
        measured = {r["id"]: {"latency_ms_measured": r["latency_ms_measured"]} for r in records
                    if r.get("latency_ms_measured") is not None}
        write_pareto_csv(run_dir / "pareto.csv", front, measured)
        if spec.network is not None:
            _save_networks(run_dir, spec, front, config)
        write_pareto_png(run_dir / "pareto.png", records, front,
                         title=f"{config.method}: final networks of {len(records)} trials")
        summary["front_size"] = len(front)
    best_text = ""
    if best is not None and isinstance(best.get(metrics[0]), (int, float)):
        best_text = f", best {metrics[0]} {best[metrics[0]]:.4f} (trial {best['trial_id']})"
    summary["headline"] = (f"{summary['trials']['total']} trials ({counts['complete']} complete, "
                           f"{counts['failed']} failed){best_text}")
    write_summary(run_dir, summary)
    return summary


def _best_trial(trials: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]],
                metric: str, mode: str) -> dict[str, Any] | None:
    """The complete trial whose last reported ``metric`` is best, with its last row."""
    last: dict[str, Mapping[str, Any]] = {}
    for row in sorted(rows, key=lambda r: _num(r.get("step"))):
        last[str(row["trial_id"])] = row
    complete = {t["trial_id"] for t in trials if t["status"] == "complete"} or set(last)
    candidates = [(row[metric], tid) for tid, row in last.items()
                  if tid in complete and isinstance(row.get(metric), (int, float))
                  and math.isfinite(row[metric])]
    if not candidates:
        return None
    value, tid = (max if mode == "max" else min)(candidates)
    final = next((t.get("final") for t in trials if t["trial_id"] == tid), None)
    best = {"trial_id": tid, metric: value, **{k: v for k, v in last[tid].items()
                                               if k != "trial_id"}}
    if final:
        best["final"] = final
    return best
