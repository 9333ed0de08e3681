"""The Ray Tune runner: every trial-based method (CLAD, ICPG, ...) runs through it.

The method describes itself with a :class:`~prunesearch.methods.trial.TrialMethod` (plain
PyTorch, no Ray); this module owns every Tune call. One Tune trial per point of the config's
``tune.space`` (grid, random or Optuna's multi-objective sampler); inside a trial the method's
steps (epochs or rounds) run in order, and after each step the runner reports the step's
metrics with the trial's state as a checkpoint.

Run directory (ARCHITECTURE.md, "Run directory"):

- ``config.yaml`` (written by the CLI), ``driver.log``;
- ``tune/experiment/``: the Tune experiment (or under ``storage`` when it is set; the run
  directory is mirrored there at the end as for searches);
- ``results.csv``: one row per trial and step (``trial_id``, the trial's parameters, the
  step's metrics);
- ``trials.json``: each trial's parameters, status (``complete`` or ``failed`` with its error)
  and final figures;
- ``summary.json``: method, status, wall_s, trials (total, complete, failed), the best trial and
  its figures, plus the method's own summary figures;
- for pruning methods, ``pareto.csv``/``pareto.png`` of the trials' final networks (the same
  columns and cost model as a search's).

``prunesearch resume RUN_DIR`` restores the experiment with ``Tuner.restore(...,
resume_errored=True)``: finished trials stay finished, the others continue from their last
checkpoint. Checkpoints hold data only (``torch.save`` of the trial's state, loaded with
``weights_only=True``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prunesearch.cluster.config import JobConfig, config_to_dict, load_config
from prunesearch.cluster.journal import atomic_write_text
from prunesearch.cluster.registry import method_entry, resolve
from prunesearch.methods.errors import PrunesearchError, RunStateError, UsageError
from prunesearch.methods.trial import TrialMethod

__all__ = [
    "EXPERIMENT_NAME",
    "check_trial_inputs",
    "param_grid_size",
    "report_trials",
    "run_trials",
    "trial_method_of",
]

#: The Tune experiment's folder under ``RUN_DIR/tune/``.
EXPERIMENT_NAME = "experiment"
_STATE_FILE = "state.pt"
_FINAL_FILE = "final.json"
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


def _space(config: JobConfig, spec: TrialMethod) -> dict[str, Any]:
    space = dict(config.tune.space)
    if not space and spec.default_space is not None:
        space = {k: list(v) for k, v in spec.default_space(config).items()}
    return space


def param_grid_size(space: Mapping[str, Any]) -> int:
    """Combinations of the lists in ``space`` (ranges count once)."""
    return math.prod(len(v) if isinstance(v, list) else 1 for v in space.values())


def _example_points(space: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every grid point (ranges at both ends): what the trials will be configured with."""
    keys = list(space)
    options = [v if isinstance(v, list) else [v["min"], v["max"]] for v in space.values()]
    for values in itertools.product(*options):
        yield dict(zip(keys, values, strict=True))


def _trial_config(base: Mapping[str, Any], params: Mapping[str, Any],
                  gpu: float) -> JobConfig:
    overrides: dict[str, Any] = {}
    for key, value in params.items():
        node = overrides
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    if gpu > 0:
        overrides.setdefault("hardware", {})["device"] = "cuda"
    return load_config(base, overrides)


def check_trial_inputs(config: JobConfig) -> None:
    """Bad input of a trial-based run, found before anything is created: every grid point's
    parameters validate as config keys, ranges are sampled by random/optuna only, metrics name
    the method's, and the method's own checks pass."""
    spec = trial_method_of(config)
    space = _space(config, spec)
    if len(space) > 0 and param_grid_size(space) > 10_000:
        raise UsageError(f"tune.space has {param_grid_size(space)} combinations; at most 10000")
    base = config_to_dict(config)
    base["tune"] = {**base["tune"], "space": {}}
    for point in itertools.islice(_example_points(space), 256):
        try:
            _trial_config(base, point, 0.0)
        except PrunesearchError as exc:
            raise UsageError(f"tune.space point {point}: {exc}") from None
    if spec.validate is not None:
        spec.validate(config)


# -------------------------------------------------------------------------- the trainable
def _run_one_trial(params: dict[str, Any], *, base: dict[str, Any], spec: TrialMethod,
                   gpu: float, threads: int) -> None:
    """Body of one Tune trial (runs in a Ray worker)."""
    import logging

    import torch
    from ray import tune

    # Ray Train logs a line per checkpoint; the runner's own progress lines say enough.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    torch.set_num_threads(max(1, threads))
    config = _trial_config(base, params, gpu)
    context = tune.get_context()
    work_dir = Path(context.get_trial_dir() or tempfile.mkdtemp()) / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    trial = spec.make_trial(config, work_dir)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / _STATE_FILE, map_location="cpu", weights_only=True)
        trial.load_state_dict(state)
    while not trial.done:
        started = time.perf_counter()
        metrics = dict(trial.step())
        metrics.setdefault("step", trial.completed_steps)
        metrics.setdefault("step_wall_s", round(time.perf_counter() - started, 3))
        final = trial.final() if trial.done else None
        with tempfile.TemporaryDirectory() as folder:
            torch.save(trial.state_dict(), Path(folder) / _STATE_FILE)
            if final is not None:
                final = _jsonable(final)
                (Path(folder) / _FINAL_FILE).write_text(json.dumps(final))
                metrics["final"] = json.dumps(final)
            metrics["done"] = bool(trial.done)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


# ------------------------------------------------------------------------------ the runner
def _param_space(space: Mapping[str, Any], search: str) -> dict[str, Any]:
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


def _metrics_and_modes(config: JobConfig, spec: TrialMethod) -> tuple[list[str], list[str]]:
    if config.tune.metrics:
        return list(config.tune.metrics), list(config.tune.modes)
    return [spec.metric], [spec.mode]


@contextlib.contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM (``ray job stop``, a scheduler) stops the experiment the way Ctrl-C does: Tune
    saves its state and returns, and the run is recorded as interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM,
                             lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _callback(run_name: str, log_path: Path, metric: str, mode: str) -> Any:
    """A Tune callback for progress lines and dashboard metrics. Tune pickles it with the
    experiment (and restores it on resume), so it holds plain data only."""
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


def run_trials(config: JobConfig, run_dir: Path, *, address: str | None = None,
               resume: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) a trial-based method as a Ray Tune experiment in ``run_dir``.

    Args:
        config: the resolved job config (``method`` a ``trials`` entry of the registry).
        run_dir: the run directory (the CLI created it and wrote ``config.yaml``).
        address: Ray cluster to join (default ``RAY_ADDRESS``, else a private local instance).
        resume: restore the experiment saved in ``run_dir/tune/``.
        log: receives progress lines (also appended to ``driver.log``).

    Returns:
        The summary written to ``summary.json``.
    """
    import ray
    from ray import tune

    from prunesearch.cluster.driver import _RunLog, connect_ray

    run_dir = Path(run_dir).expanduser().resolve()
    spec = trial_method_of(config)
    space = _space(config, spec)
    metrics, modes = _metrics_and_modes(config, spec)
    storage = run_dir / "tune"
    experiment = storage / EXPERIMENT_NAME
    if resume and not tune.Tuner.can_restore(str(experiment)):
        raise RunStateError(f"{run_dir} has no Tune experiment to resume under {experiment}; "
                            "start it again with 'prunesearch run CONFIG --overwrite'")
    if not resume and experiment.exists():
        raise RunStateError(f"{run_dir} already holds a Tune experiment; resume it with "
                            f"'prunesearch resume {run_dir}'")
    # A checkpoint per step makes Tune warn about frequent experiment snapshots; they are
    # what makes a killed driver resumable, so the warning is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    run_log = _RunLog(run_dir / "driver.log", log)
    was_connected = ray.is_initialized()
    started = time.perf_counter()
    previous_wall = _previous_wall(run_dir) if resume else 0.0
    status = "failed"
    error: BaseException | None = None
    trials: list[dict[str, Any]] = []
    try:
        connect_ray(address, config)
        resources = config.tune.resources_per_trial
        base = config_to_dict(config)
        base["tune"] = {**base["tune"], "space": {}}
        trainable = tune.with_resources(
            tune.with_parameters(_run_one_trial, base=base, spec=spec, gpu=resources.gpu,
                                 threads=max(1, int(resources.cpu)) if resources.cpu else 1),
            {"cpu": resources.cpu, "gpu": resources.gpu},
        )
        progress = _callback(run_dir.name, run_dir / "driver.log", metrics[0], modes[0])
        if resume:
            run_log(f"resuming the Tune experiment in {experiment}")
            tuner = tune.Tuner.restore(str(experiment), trainable=trainable,
                                       resume_errored=True)
        else:
            n = param_grid_size(space) * config.tune.num_samples
            run_log(f"{config.method}: {n if config.tune.search == 'grid' else config.tune.num_samples}"
                    f" trials ({config.tune.search} over {', '.join(space) or 'no parameters'}), "
                    f"{resources.cpu:g} CPU / {resources.gpu:g} GPU each")
            tuner = tune.Tuner(
                trainable,
                param_space=_param_space(space, config.tune.search),
                tune_config=_tune_config(config, metrics, modes),
                run_config=tune.RunConfig(
                    name=EXPERIMENT_NAME, storage_path=str(storage), verbose=0,
                    failure_config=tune.FailureConfig(max_failures=config.tune.max_failures),
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=config.tune.num_to_keep),
                    callbacks=[progress],
                ),
            )
        with _sigterm_as_sigint():
            grid = tuner.fit()
        trials = _trial_outcomes(grid)
        unfinished = [t for t in trials if t["status"] == "unfinished"]
        status = "interrupted" if unfinished else "complete"
        if unfinished:
            run_log(f"interrupted: {len(unfinished)} trials unfinished; continue with "
                    f"'prunesearch resume {run_dir}'")
    except KeyboardInterrupt:
        status = "interrupted"
        run_log(f"interrupted; continue with 'prunesearch resume {run_dir}'")
    except BaseException as exc:  # noqa: BLE001 - recorded in summary.json, then re-raised
        error = exc
        run_log(f"run failed: {type(exc).__name__}: {exc}")
    finally:
        wall_s = previous_wall + time.perf_counter() - started
        if trials:
            atomic_write_text(run_dir / "trials.json", json.dumps(trials, indent=2) + "\n")
        summary = report_trials(run_dir, status=status, wall_s=wall_s, config=config)
        if config.storage:
            from prunesearch.cluster.storage import mirror_run, mirror_uri

            with contextlib.suppress(Exception):
                mirror_run(run_dir, mirror_uri(config.storage, run_dir.name), log=run_log)
        run_log(f"{config.method} {status}: {summary.get('headline')}")
        if not was_connected and ray.is_initialized():
            ray.shutdown()
        run_log.close()
    if error is not None:
        raise error
    return summary


def _tune_config(config: JobConfig, metrics: list[str], modes: list[str]) -> Any:
    from ray import tune

    kwargs: dict[str, Any] = {"num_samples": config.tune.num_samples,
                              "max_concurrent_trials": config.tune.max_concurrent}
    if config.tune.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        kwargs["search_alg"] = OptunaSearch(metric=metrics if len(metrics) > 1 else metrics[0],
                                            mode=modes if len(modes) > 1 else modes[0],
                                            seed=config.seed)
    else:
        from ray.tune.search import BasicVariantGenerator

        kwargs["search_alg"] = BasicVariantGenerator(random_state=config.seed)
        kwargs["metric"], kwargs["mode"] = metrics[0], modes[0]
    return tune.TuneConfig(**kwargs)


def _trial_outcomes(grid: Any) -> list[dict[str, Any]]:
    outcomes = []
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        if result.error is not None:
            status = "failed"
        elif metrics.get("done"):
            status = "complete"
        else:
            status = "unfinished"
        final = None
        if isinstance(metrics.get("final"), str):
            with contextlib.suppress(ValueError):
                final = json.loads(metrics["final"])
        outcomes.append({
            "trial_id": trial_id,
            "params": _jsonable(dict(result.config or {})),
            "status": status,
            "error": _one_line(result.error) if result.error is not None else None,
            "steps": metrics.get("step"),
            "final": final,
            "path": str(result.path),
        })
    return sorted(outcomes, key=lambda t: t["trial_id"])


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[-500:] if text else type(exc).__name__


def _previous_wall(run_dir: Path) -> float:
    with contextlib.suppress(OSError, ValueError):
        return float(json.loads((run_dir / "summary.json").read_text()).get("wall_s", 0.0))
    return 0.0


# ------------------------------------------------------------------------------ the report
def _read_rows(experiment: Path) -> list[dict[str, Any]]:
    """Every reported row of every trial, from the trials' ``result.json`` files."""
    rows: dict[tuple[str, Any], dict[str, Any]] = {}
    for path in sorted(experiment.glob("*/result.json")):
        for line in path.read_text().splitlines():
            try:
                result = json.loads(line)
            except ValueError:
                continue  # a torn last line from a killed trial
            row = {"trial_id": result.get("trial_id") or path.parent.name}
            for key, value in (result.get("config") or {}).items():
                row[key] = value
            for key, value in result.items():
                if key in ("config", "trial_id", "final", "done") or key in _TUNE_KEYS:
                    continue
                if isinstance(value, (int, float, str, bool)) or value is None:
                    row[key] = value
            rows[(row["trial_id"], result.get("step", result.get("training_iteration")))] = row
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


def report_trials(run_dir: Path, *, status: str | None = None, wall_s: float | None = None,
                  config: JobConfig | None = None) -> dict[str, Any]:
    """Write ``results.csv``, ``summary.json`` and (pruning methods) ``pareto.csv``/``.png``
    from the run directory alone (``prunesearch report`` calls it with the run directory)."""
    from prunesearch.cluster.report import front_records, write_pareto_csv, write_pareto_png
    from prunesearch.cluster.report import write_summary

    run_dir = Path(run_dir)
    if config is None:
        import yaml

        config = load_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    spec = trial_method_of(config)
    metrics, modes = _metrics_and_modes(config, spec)
    previous: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads((run_dir / "summary.json").read_text())
    rows = _read_rows(run_dir / "tune" / EXPERIMENT_NAME)
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
        summary["method_summary"] = _jsonable(spec.summarize(rows))
    if spec.pruning:
        records = _final_records(trials)
        front = front_records(records)
        measured = {r["id"]: {"latency_ms_measured": r["latency_ms_measured"]} for r in records
                    if r.get("latency_ms_measured") is not None}
        write_pareto_csv(run_dir / "pareto.csv", front, measured)
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
