"""The Ray Tune runner, driven by a toy trial method (``toy_trials.py``): every trial runs and
is reported, a failing trial is retried and then recorded as failed, a driver killed after the
first checkpoint resumes to the uninterrupted results, and bad input is refused up front."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import toy_trials  # noqa: F401 - registers method "toy"
from prunesearch.cluster.cli import main
from prunesearch.cluster.config import dump_config, load_config
from prunesearch.cluster.registry import METHODS
from prunesearch.cluster.tune_runner import run_trials
from prunesearch.cluster.tune_state import RESUME_KEY

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
STEPS = 3


@pytest.fixture(scope="module")
def ray_address() -> str:
    """A private local Ray whose workers can import ``toy_trials`` (PYTHONPATH is inherited
    from the process that starts Ray)."""
    if ray.is_initialized():
        ray.shutdown()
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), old) if p)
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
             log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def _raw(seeds: list[int], **tune: object) -> dict:
    return {"method": "toy", "seed": 0,
            "evaluator": {"finetune_steps": STEPS, "synthetic_sleep_s": 0.0},
            "tune": {"space": {"seed": seeds}, "resources_per_trial": {"cpu": 1}, **tune}}


def _run(tmp_path: Path, raw: dict, name: str = "run") -> tuple[Path, dict]:
    config = load_config(raw)
    run_dir = tmp_path / name
    run_dir.mkdir()
    dump_config(config, run_dir / "config.yaml")
    return run_dir, run_trials(config, run_dir, log=lambda line: None)


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.csv") as handle:
        return list(csv.DictReader(handle))


def _scores(run_dir: Path) -> dict[tuple[int, int], float]:
    return {(int(r["seed"]), int(r["step"])): float(r["score"]) for r in _rows(run_dir)}


def test_a_registered_trial_method_is_a_config_choice() -> None:
    assert METHODS["toy"].kind == "trials"
    assert load_config(_raw([1])).method == "toy"


def test_grid_runs_every_trial_and_writes_the_run_directory(ray_address, tmp_path) -> None:
    run_dir, summary = _run(tmp_path, _raw([1, 2, 3]))
    assert summary["status"] == "complete"
    assert summary["trials"] == {"total": 3, "complete": 3, "failed": 0, "unfinished": 0}
    # One row per trial and step, with the trial's parameter and the step's metric.
    assert _scores(run_dir) == {(s, k): toy_trials.score(s, k)
                                for s in (1, 2, 3) for k in range(1, STEPS + 1)}
    best = summary["best_trial"]
    assert best["seed"] == 1 and best["score"] == toy_trials.score(1, STEPS)
    # The trials' final networks: all three are non-dominated (faster = less accurate).
    with open(run_dir / "pareto.csv") as handle:
        front = list(csv.DictReader(handle))
    assert sorted(r["genome"] for r in front) == ["1 1", "2 1", "3 1"]
    assert (run_dir / "pareto.png").stat().st_size > 0
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"
    # Checkpoints are bounded by tune.num_to_keep (1).
    for trial_dir in (run_dir / "tune" / "experiment").glob("_run_one_trial_*"):
        assert len(list(trial_dir.glob("checkpoint_*"))) == 1
    # `prunesearch report` re-renders it from the run directory alone.
    (run_dir / "results.csv").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert len(_rows(run_dir)) == 3 * STEPS


def test_failing_trial_is_retried_then_recorded_as_failed(ray_address, tmp_path) -> None:
    raw = _raw([1, toy_trials.FAIL_ALWAYS, toy_trials.FAIL_ONCE], max_failures=1)
    run_dir, summary = _run(tmp_path, raw)
    trials = {t["params"]["seed"]: t for t in json.loads((run_dir / "trials.json").read_text())}
    assert trials[1]["status"] == "complete"
    assert trials[toy_trials.FAIL_ONCE]["status"] == "complete"  # healed by its retry
    failed = trials[toy_trials.FAIL_ALWAYS]
    assert failed["status"] == "failed" and "fails on purpose" in failed["error"]
    # Two attempts: the first and the one retry allowed by max_failures.
    work = Path(failed["path"]) / "work"
    assert len(list(work.glob("failed-attempt-*"))) == 2
    assert summary["trials"]["failed"] == 1 and summary["trials"]["complete"] == 2


def test_a_run_whose_every_trial_failed_is_failed_exit_1_and_says_why(ray_address, tmp_path,
                                                                      capsys) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(_raw([toy_trials.FAIL_ALWAYS], max_failures=0)))
    run_dir = tmp_path / "all-failed"
    assert main(["run", str(job), "--output", str(run_dir)]) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["trials"]["failed"] == 1 and summary["trials"]["complete"] == 0
    log = (run_dir / "driver.log").read_text()
    assert "every trial failed" in log and "fails on purpose" in log
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("failed: 1 trials")


def test_killed_driver_resumes_and_accounts_for_every_trial(ray_address, tmp_path) -> None:
    # What the uninterrupted run reports (test_grid_runs_every_trial_... checks a real one).
    reference = {(s, k): toy_trials.score(s, k) for s in (1, 2) for k in range(1, STEPS + 1)}
    raw = _raw([1, 2])
    raw["evaluator"]["synthetic_sleep_s"] = 1.0
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "killed"
    log = open(tmp_path / "driver.out", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "toy_trials.py"), "run", str(job), "--output", str(run_dir),
         "--address", ray_address], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": os.environ["PYTHONPATH"]})
    deadline = time.monotonic() + 120
    while not list((run_dir / "tune" / "experiment").glob("*/checkpoint_*/progress.json")):
        assert proc.poll() is None, (tmp_path / "driver.out").read_text()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    time.sleep(0.2)  # the checkpoint's last file lands (a step takes 1 s: no second one)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL

    config = load_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    summary = run_trials(config, run_dir, resume=True, log=lambda line: None)
    assert summary["status"] == "complete"
    assert summary["trials"]["total"] == 2 and summary["trials"]["complete"] == 2
    assert _scores(run_dir) == reference
    steps = [(r["trial_id"], r["step"]) for r in _rows(run_dir)]
    assert len(steps) == len(set(steps)) == 2 * STEPS
    # The trial that had checkpointed round 1 went on at round 2, in a fresh experiment (the
    # other, if it had started, had nothing checkpointed and begins again at round 1).
    firsts = _first_resumed_steps(run_dir)
    assert 2 in firsts and set(firsts) <= {1, 2}, firsts


@pytest.mark.parametrize(("override", "message"), [
    ("tune.space={evaluator.no_such_key: [1]}", "unknown key 'evaluator.no_such_key'"),
    ("tune.space={seed: [-1]}", "seed: -1 is below the minimum"),
    ("tune.space={evaluator.lr: {min: 0.1, max: 0.2}}", "a range needs tune.search random"),
    ("tune.metrics=[score, other]", "give one mode"),
])
def test_bad_tune_input_is_exit_2_with_one_line(tmp_path, capsys, override, message) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(_raw([1])))
    out = tmp_path / "out"
    assert main(["run", str(job), "--output", str(out), "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


# ------------------------------------------------- resume reads data only, never Tune's pickles
def _first_resumed_steps(run_dir: Path) -> list[int]:
    """The first step each continued trial of the second attempt reported."""
    firsts = []
    for folder in sorted((run_dir / "tune" / "experiment-1").glob("_run_one_trial_*")):
        if RESUME_KEY in json.loads((folder / "params.json").read_text()):
            lines = (folder / "result.json").read_text().splitlines()
            firsts.append(json.loads(lines[0])["step"])
    return firsts


class _Boom:
    """Unpickling this writes ``marker``: what a crafted file in a run directory would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _interrupt(run_dir: Path, *, keep_first: int, drop: int = 0) -> None:
    """Turn a complete run (every checkpoint kept) into one killed after round 1 of its first
    ``keep_first`` trials, with the next ``drop`` trials never started."""
    folders = sorted((run_dir / "tune" / "experiment").glob("_run_one_trial_*"))
    for folder in folders[:keep_first]:
        for checkpoint in sorted(folder.glob("checkpoint_*"))[1:]:
            shutil.rmtree(checkpoint)
        lines = (folder / "result.json").read_text().splitlines()
        (folder / "result.json").write_text(lines[0] + "\n")
    for folder in folders[keep_first:keep_first + drop]:
        shutil.rmtree(folder)
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    (run_dir / "trials.json").unlink()


def _plant_pickles(run_dir: Path, marker: Path) -> int:
    """Replace every file Tune would unpickle on restore with one that writes ``marker``."""
    crafted = pickle.dumps(_Boom(marker))
    planted = 0
    experiment = run_dir / "tune" / "experiment"
    paths = {experiment / "tuner.pkl", experiment / "trainable.pkl"}
    for pattern in ("searcher-state-*.pkl", "experiment_state-*.json", "*/params.pkl"):
        paths.update(experiment.glob(pattern))
    for path in paths:
        path.write_bytes(crafted)
        planted += 1
    return planted


# Grid search: test_a_damaged_trial_checkpoint_... plants the same pickles before its resume.
@pytest.mark.parametrize(("search", "seeds", "samples"), [("random", [1, 2, 3, 4], 3)])
def test_resume_never_unpickles_the_tune_experiment(ray_address, tmp_path, capsys, search,
                                                    seeds, samples) -> None:
    raw = _raw(seeds, search=search, num_samples=samples, num_to_keep=STEPS)
    run_dir, first = _run(tmp_path, raw)
    assert first["status"] == "complete"
    uninterrupted = _scores(run_dir)
    _interrupt(run_dir, keep_first=1, drop=1)
    marker = tmp_path / "marker"
    assert _plant_pickles(run_dir, marker) >= 4

    assert main(["resume", str(run_dir)]) == 0, capsys.readouterr().err
    assert not marker.exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    n_trials = first["trials"]["complete"]
    assert summary["status"] == "complete" and summary["trials"]["complete"] == n_trials
    assert _scores(run_dir) == uninterrupted
    steps = [(r["trial_id"], r["step"]) for r in _rows(run_dir)]
    assert len(steps) == len(set(steps)) == n_trials * STEPS
    assert _first_resumed_steps(run_dir) == [2]
    trials = json.loads((run_dir / "trials.json").read_text())
    assert [t["status"] for t in trials] == ["complete"] * len(trials)


def test_a_damaged_trial_checkpoint_is_exit_2_and_a_torn_one_is_skipped(
        ray_address, tmp_path, capsys) -> None:
    run_dir, _ = _run(tmp_path, _raw([1, 2], num_to_keep=STEPS))
    uninterrupted = _scores(run_dir)
    first, second = sorted((run_dir / "tune" / "experiment").glob("_run_one_trial_*"))
    # The second trial's round-2 checkpoint was being copied when the driver died: torn and
    # never reported (its result line is not there).
    torn = sorted(second.glob("checkpoint_*"))[1]
    torn_bytes = (torn / "state.pt").read_bytes()
    _interrupt(run_dir, keep_first=2)
    torn.mkdir()
    (torn / "state.pt").write_bytes(torn_bytes[:100])
    shutil.copy(second / "checkpoint_000000" / "progress.json", torn / "progress.json")
    marker = tmp_path / "marker"
    state = sorted(first.glob("checkpoint_*"))[0] / "state.pt"
    progress_path = state.parent / "progress.json"
    original, original_progress = state.read_bytes(), progress_path.read_text()
    crafted = pickle.dumps(_Boom(marker))
    progress = json.loads(original_progress)
    progress.update(state_bytes=len(crafted), state_sha256=hashlib.sha256(crafted).hexdigest())
    for damage in ("garbage", "code"):
        if damage == "garbage":
            state.write_bytes(b"\x00 not a torch file")
        else:  # a pickle that runs code, its progress.json made to match it
            state.write_bytes(crafted)
            progress_path.write_text(json.dumps(progress))
        capsys.readouterr()
        assert main(["resume", str(run_dir)]) == 2, damage
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and "checkpoint" in err[0] and "Traceback" not in captured.err, err
        assert captured.out == ""
        assert not marker.exists()
        assert not (run_dir / "tune" / "experiment-1").exists()
    state.write_bytes(original)
    progress_path.write_text(original_progress)
    # Everything Tune itself would unpickle on restore is crafted too: never read.
    assert _plant_pickles(run_dir, marker) >= 4
    assert main(["resume", str(run_dir)]) == 0, capsys.readouterr().err
    assert not marker.exists()
    assert _first_resumed_steps(run_dir) == [2, 2]
    assert _scores(run_dir) == uninterrupted
    trials = json.loads((run_dir / "trials.json").read_text())
    assert [t["status"] for t in trials] == ["complete"] * 2


def test_optuna_search_resumes_with_the_finished_trials_told(ray_address, tmp_path,
                                                             capsys) -> None:
    raw = _raw([1, 2, 3, 4, 5], search="optuna", num_samples=3, num_to_keep=STEPS)
    run_dir, first = _run(tmp_path, raw)
    assert first["trials"]["complete"] == 3
    folders = sorted((run_dir / "tune" / "experiment").glob("_run_one_trial_*"))
    kept = {json.loads((f / "params.json").read_text())["seed"] for f in folders[::2]}
    finished_rows = _scores(run_dir)
    _interrupt(run_dir, keep_first=1, drop=1)
    marker = tmp_path / "marker"
    _plant_pickles(run_dir, marker)
    assert main(["resume", str(run_dir)]) == 0, capsys.readouterr().err
    assert not marker.exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["trials"]["total"] == 3 and summary["trials"]["complete"] == 3
    scores = _scores(run_dir)
    steps = [(r["trial_id"], r["step"]) for r in _rows(run_dir)]
    assert len(steps) == len(set(steps)) == 3 * STEPS
    # The continued trial and the untouched one end as they did; a third was suggested anew.
    for seed in kept:
        for step in range(1, STEPS + 1):
            assert scores[(seed, step)] == finished_rows[(seed, step)]
    assert _first_resumed_steps(run_dir) == [2]


def test_pending_trials_follow_the_plan_or_what_the_cluster_holds(ray_address,
                                                                   monkeypatch) -> None:
    from prunesearch.cluster import tune_runner

    assert tune_runner._trials_that_fit(1.0, 0.0) == 2  # the fixture's 2 CPUs
    assert tune_runner._trials_that_fit(0.5, 0.0) == 4
    assert tune_runner._trials_that_fit(1.0, 1.0) == 1  # no GPU (num_gpus=0): one, not none
    monkeypatch.delenv(tune_runner.PENDING_ENV, raising=False)
    # A planned search (grid, random) may have all its trials pending; an adaptive one only
    # as many as run at once; afterwards Tune's own default is back.
    for planned, expected in ((True, "10"), (False, "2")):
        with tune_runner._pending_trials(10, 1.0, 0.0, planned):
            assert os.environ[tune_runner.PENDING_ENV] == expected
        assert tune_runner.PENDING_ENV not in os.environ
    # optuna with tune.max_concurrent: Tune's own rule (that many pending) stands.
    with tune_runner._pending_trials(10, 1.0, 0.0, False, max_concurrent=4):
        assert tune_runner.PENDING_ENV not in os.environ
    with pytest.raises(KeyboardInterrupt):  # restored however fit() ends
        with tune_runner._pending_trials(10, 1.0, 0.0, True):
            raise KeyboardInterrupt
    assert tune_runner.PENDING_ENV not in os.environ
    monkeypatch.setenv(tune_runner.PENDING_ENV, "7")  # the user's choice is kept
    with tune_runner._pending_trials(10, 1.0, 0.0, True):
        assert os.environ[tune_runner.PENDING_ENV] == "7"
