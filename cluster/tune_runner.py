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

``prunesearch resume RUN_DIR`` never restores Ray Tune's own (cloudpickled) experiment state:
it reads what the trials reported, as data (``tune_state``), and starts a fresh Tune experiment
(``tune/experiment-N``, one per resume) whose trials are exactly the unfinished ones, each
from its last checkpoint, followed by the trials not yet started (``tune_search``). Finished
trials keep their results; failed ones are retried from their last checkpoint, as Tune's
``resume_errored`` would. Checkpoints hold data only (``torch.save`` of the trial's state,
loaded with ``weights_only=True``); a damaged one is refused before anything starts.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prunesearch.cluster.config import JobConfig, config_to_dict, load_config
from prunesearch.cluster.tune_progress import progress_callback
from prunesearch.cluster.tune_report import (
    jsonable,
    metrics_and_modes,
    report_trials,
    trial_method_of,
)
from prunesearch.cluster.tune_state import (
    EXPERIMENT_NAME,
    PROGRESS_FILE,
    RESUME_KEY,
    STATE_FILE,
    TrialRecord,
    experiment_dirs,
    experiment_name,
    load_progress,
    load_state,
    next_attempt,
    read_trials,
    trial_id_of,
)
from prunesearch.methods.errors import PrunesearchError, RunStateError, UsageError
from prunesearch.methods.io import atomic_write_text
from prunesearch.methods.trial import TrialMethod

__all__ = [
    "EXPERIMENT_NAME",
    "check_trial_inputs",
    "param_grid_size",
    "report_trials",
    "run_trials",
    "trial_method_of",
]

_STATE_FILE = STATE_FILE
_FINAL_FILE = "final.json"


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
                   gpu: float, threads: int, resume_from: Mapping[str, str] | None = None
                   ) -> None:
    """Body of one Tune trial (runs in a Ray worker). A trial that continues one of an earlier
    attempt (``RESUME_KEY`` in its config) starts from that trial's last checkpoint, the
    folder ``resume_from`` names (a path or a storage URI), until it has one of its own.

    Each checkpoint holds ``state.pt`` (the trial's state, ``torch.save``) and
    ``progress.json`` (the trial's config, step, done, every step's metrics so far, its final
    figures, and the size and SHA-256 of ``state.pt``), so it describes itself whatever
    Tune's own files say after a crash."""
    import hashlib
    import logging

    import torch
    from ray import tune

    # Ray Train logs a line per checkpoint; the runner's own progress lines say enough.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    torch.set_num_threads(max(1, threads))
    origin = params.get(RESUME_KEY)
    config = _trial_config(base, {k: v for k, v in params.items() if k != RESUME_KEY}, gpu)
    context = tune.get_context()
    work_dir = Path(context.get_trial_dir() or tempfile.mkdtemp()) / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    trial = spec.make_trial(config, work_dir)
    rows: list[dict[str, Any]] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / _STATE_FILE, map_location="cpu", weights_only=True)
            rows = list(load_progress(str(folder)).get("rows") or [])
        trial.load_state_dict(state)
    elif origin is not None and resume_from and origin in resume_from:
        location = resume_from[origin]
        trial.load_state_dict(load_state(f"{location.rstrip('/')}/{_STATE_FILE}"))
        rows = list(load_progress(location).get("rows") or [])
    while not trial.done:
        started = time.perf_counter()
        metrics = dict(trial.step())
        metrics.setdefault("step", trial.completed_steps)
        metrics.setdefault("step_wall_s", round(time.perf_counter() - started, 3))
        final = jsonable(trial.final()) if trial.done else None
        if final is not None:
            metrics["final"] = json.dumps(final)
        metrics["done"] = bool(trial.done)
        rows.append(jsonable(metrics))
        with tempfile.TemporaryDirectory() as folder:
            state_path = Path(folder) / _STATE_FILE
            torch.save(trial.state_dict(), state_path)
            data = state_path.read_bytes()
            if final is not None:
                (Path(folder) / _FINAL_FILE).write_text(json.dumps(final))
            progress = {"config": jsonable(params), "step": metrics["step"],
                        "done": metrics["done"], "rows": rows, "final": final,
                        "state_bytes": len(data),
                        "state_sha256": hashlib.sha256(data).hexdigest()}
            (Path(folder) / PROGRESS_FILE).write_text(json.dumps(progress))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


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


#: Ray Tune's environment variable for how many trials may wait for resources at once.
PENDING_ENV = "TUNE_MAX_PENDING_TRIALS_PG"


def _trials_that_fit(cpu: float, gpu: float) -> int:
    """How many trials of ``cpu`` / ``gpu`` each the connected cluster holds at once now."""
    import ray

    total = ray.cluster_resources()
    fits = [int(total.get(name, 0.0) // need) for name, need in (("CPU", cpu), ("GPU", gpu))
            if need > 0]
    return max(1, min(fits)) if fits else 1


@contextlib.contextmanager
def _pending_trials(n_trials: int, cpu: float, gpu: float, planned: bool,
                    max_concurrent: int | None = None) -> Iterator[None]:
    """Let Tune start as many trials at once as the cluster holds.

    With any searcher but its own grid generator, Tune keeps one trial pending at a time
    (``TUNE_MAX_PENDING_TRIALS_PG`` "auto"), so each trial waits for the previous one's worker
    to start (seconds) however many slots are free. A planned search (grid, random: every
    point fixed before any result) may have every trial pending (up to 200), as Tune's grid
    generator does; an adaptive one (optuna) as many as fit in the cluster now, so that no
    suggestion is made long before it can run; with ``tune.max_concurrent`` set Tune's own
    rule (that many) stands. A value the user set is kept. The variable is read where Tune's
    controller runs: in this process, except under Ray Client (``ray://``), where it runs on
    the head and keeps Tune's default."""
    if PENDING_ENV in os.environ or (not planned and max_concurrent):
        yield
        return
    try:
        count = min(n_trials, 200) if planned else min(n_trials, _trials_that_fit(cpu, gpu))
        os.environ[PENDING_ENV] = str(max(1, count))
        yield
    finally:
        os.environ.pop(PENDING_ENV, None)


def run_trials(config: JobConfig, run_dir: Path, *, address: str | None = None,
               resume: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) a trial-based method as a Ray Tune experiment in ``run_dir``.

    Args:
        config: the resolved job config (``method`` a ``trials`` entry of the registry).
        run_dir: the run directory (the CLI created it and wrote ``config.yaml``).
        address: Ray cluster to join (default ``RAY_ADDRESS``, else a private local instance).
        resume: continue the trials recorded under ``run_dir/tune/`` (read as data; Tune's
            pickled state is never loaded) in a new experiment ``tune/experiment-N``.
        log: receives progress lines (also appended to ``driver.log``).

    Returns:
        The summary written to ``summary.json``.

    Raises:
        RunStateError: ``run`` on a directory that holds trials, or ``resume`` of one whose
            unfinished trials' checkpoints are missing or damaged (before anything starts).
    """
    import ray
    from ray import tune

    from prunesearch.cluster.driver import _RunLog, connect_ray

    run_dir = Path(run_dir).expanduser().resolve()
    spec = trial_method_of(config)
    space = _space(config, spec)
    metrics, modes = metrics_and_modes(config, spec)
    storage = run_dir / "tune"
    if not resume and experiment_dirs(storage):
        raise RunStateError(f"{run_dir} already holds a Tune experiment; resume it with "
                            f"'prunesearch resume {run_dir}'")
    # Everything resume needs, from data files only, checked before Ray starts.
    records = read_trials(storage) if resume else {}
    resume_from = _checked_checkpoints(records)
    attempt = next_attempt(storage)
    # A checkpoint per step makes Tune warn about frequent experiment snapshots; they are
    # what makes a killed driver resumable, so the warning is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    run_log = _RunLog(run_dir / "driver.log", log)
    was_connected = ray.is_initialized()
    started = time.perf_counter()
    previous_wall = _previous_wall(run_dir) if resume else 0.0
    status = "failed"
    error: BaseException | None = None
    grid: Any = None
    try:
        connect_ray(address, config)
        resources = config.tune.resources_per_trial
        base = config_to_dict(config)
        base["tune"] = {**base["tune"], "space": {}}
        trainable = tune.with_resources(
            tune.with_parameters(_run_one_trial, base=base, spec=spec, gpu=resources.gpu,
                                 threads=max(1, int(resources.cpu)) if resources.cpu else 1,
                                 resume_from=resume_from),
            {"cpu": resources.cpu, "gpu": resources.gpu},
        )
        searcher, n_trials, continued = _attempt_searcher(config, space, metrics, modes,
                                                          records, attempt)
        if resume:
            done = sum(1 for r in records.values() if r.done)
            run_log(f"resuming: {done} trials finished, {continued} continued from their last "
                    f"checkpoint, {n_trials - continued} not started yet (Tune experiment "
                    f"{storage / experiment_name(attempt)})")
        else:
            n = config.tune.num_samples if config.tune.search == "optuna" else n_trials
            run_log(f"{config.method}: {n} trials ({config.tune.search} over "
                    f"{', '.join(space) or 'no parameters'}), "
                    f"{resources.cpu:g} CPU / {resources.gpu:g} GPU each")
        if n_trials > 0:
            progress = progress_callback(run_dir.name, run_dir / "driver.log", metrics[0],
                                         modes[0])
            tuner = tune.Tuner(
                trainable,
                param_space={},
                tune_config=tune.TuneConfig(num_samples=n_trials, search_alg=searcher,
                                            max_concurrent_trials=config.tune.max_concurrent),
                run_config=tune.RunConfig(
                    name=experiment_name(attempt), storage_path=str(storage), verbose=0,
                    failure_config=tune.FailureConfig(max_failures=config.tune.max_failures),
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=config.tune.num_to_keep),
                    callbacks=[progress],
                ),
            )
            planned = not (config.tune.search == "optuna" and space)
            with _sigterm_as_sigint(), _pending_trials(n_trials, resources.cpu, resources.gpu,
                                                       planned, config.tune.max_concurrent):
                grid = tuner.fit()
        outcomes = _trial_outcomes(grid, read_trials(storage))
        unfinished = [t for t in outcomes if t["status"] == "unfinished"]
        status = "interrupted" if unfinished else "complete"
        if unfinished:
            run_log(f"interrupted: {len(unfinished)} trials unfinished; continue with "
                    f"'prunesearch resume {run_dir}'")
        elif outcomes and not any(t["status"] == "complete" for t in outcomes):
            # Nothing to pick from: the run failed (exit 1), and says why in one line.
            status = "failed"
            first = next((t for t in outcomes if t.get("error")), None)
            why = (f"; trial {first['trial_id']}: {first['error']}" if first else "")
            run_log(f"every trial failed{why} (all errors: {run_dir / 'trials.json'}; "
                    f"'prunesearch resume {run_dir}' retries them)")
    except KeyboardInterrupt:
        status = "interrupted"
        run_log(f"interrupted; continue with 'prunesearch resume {run_dir}'")
    except BaseException as exc:  # noqa: BLE001 - recorded in summary.json, then re-raised
        error = exc
        run_log(f"run failed: {type(exc).__name__}: {exc}")
    finally:
        wall_s = previous_wall + time.perf_counter() - started
        trials = _trial_outcomes(grid, read_trials(storage))
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


def _checked_checkpoints(records: Mapping[str, TrialRecord]) -> dict[str, str]:
    """The checkpoint folder each unfinished trial continues from, its state loaded once here
    (data only) so that a damaged or tampered one is refused before anything starts."""
    resume_from: dict[str, str] = {}
    for record in records.values():
        if record.done:
            continue
        if record.damaged:
            raise RunStateError(record.damaged)
        if record.checkpoint is None:
            continue  # nothing checkpointed yet: the trial starts from its beginning
        load_state(str(record.checkpoint / STATE_FILE))
        resume_from[record.trial_id] = str(record.checkpoint)
    return resume_from


def _attempt_searcher(config: JobConfig, space: Mapping[str, Any], metrics: list[str],
                      modes: list[str], records: Mapping[str, TrialRecord],
                      attempt: int) -> tuple[Any, int, int]:
    """The searcher of this attempt, its number of trials and how many continue earlier ones.

    Continued trials (unfinished in an earlier attempt, failed ones included) come first,
    with their own parameters; then the grid/random points of the plan that no trial has
    taken, or (optuna) new suggestions up to ``tune.num_samples``, the finished trials told
    to the sampler first."""
    from prunesearch.cluster.tune_search import (
        PlannedSearch,
        param_domains,
        plan_points,
        point_key,
        tell_finished,
    )

    ordered = sorted(records.values(), key=lambda r: r.order)
    continued = [{**r.params, RESUME_KEY: r.trial_id} for r in ordered if not r.done]
    search = config.tune.search
    if search == "optuna" and space:
        from ray.tune.search.optuna import OptunaSearch

        inner = OptunaSearch(space=param_domains(space, "optuna"),
                             metric=metrics if len(metrics) > 1 else metrics[0],
                             mode=modes if len(modes) > 1 else modes[0],
                             seed=config.seed + attempt)
        for record in ordered:
            if record.done and record.metrics is not None:
                tell_finished(inner, record.params, record.metrics, metrics)
        new = max(0, config.tune.num_samples - len(records))
        searcher = PlannedSearch(continued, inner=inner, metrics=metrics, strip=RESUME_KEY)
        return searcher, len(continued) + new, len(continued)
    plan = plan_points(space, "grid" if search == "grid" else "random",
                       config.tune.num_samples, config.seed)
    taken: dict[str, int] = {}
    for record in records.values():
        key = point_key(record.params)
        taken[key] = taken.get(key, 0) + 1
    remaining = []
    for point in plan:
        key = point_key(point)
        if taken.get(key, 0) > 0:
            taken[key] -= 1
        else:
            remaining.append(point)
    points = continued + remaining
    return PlannedSearch(points), len(points), len(continued)


def _trial_outcomes(grid: Any, records: Mapping[str, TrialRecord]) -> list[dict[str, Any]]:
    """Each trial's parameters, status, error, steps and final figures: what the run
    directory records (every attempt), with this attempt's errors and not-yet-started trials
    from Tune's result grid."""
    outcomes: dict[str, dict[str, Any]] = {}
    for record in records.values():
        outcomes[record.trial_id] = {
            "trial_id": record.trial_id,
            "params": jsonable(record.params),
            "status": "complete" if record.done else "unfinished",
            "error": None,
            "steps": record.step,
            "final": record.final,
            "path": str(record.path),
        }
    for result in grid if grid is not None else ():
        config = dict(result.config or {})
        trial_id = trial_id_of(config, result.metrics, Path(result.path))
        params = {k: v for k, v in config.items() if k != RESUME_KEY}
        outcome = outcomes.setdefault(trial_id, {
            "trial_id": trial_id, "params": jsonable(params), "status": "unfinished",
            "error": None, "steps": None, "final": None, "path": str(result.path)})
        if result.error is not None and outcome["status"] != "complete":
            outcome["status"] = "failed"
            outcome["error"] = _one_line(result.error)
    return sorted(outcomes.values(), key=lambda t: t["trial_id"])


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[-500:] if text else type(exc).__name__


def _previous_wall(run_dir: Path) -> float:
    with contextlib.suppress(OSError, ValueError):
        return float(json.loads((run_dir / "summary.json").read_text()).get("wall_s", 0.0))
    return 0.0


