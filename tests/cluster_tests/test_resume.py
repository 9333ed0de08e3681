"""Resume after the driver dies: SIGKILL at random moments (also mid-checkpoint), a torn journal
line, and a run resumed from its ``file://`` storage mirror all end with exactly the front and
journal of an uninterrupted run with the same seed (deterministic synthetic evaluator, HAMP).

The killed drivers are real ``python -m prunesearch run`` processes joining this module's Ray
instance (joining takes ~1 s, starting Ray ~5 s); the final resume runs in-process.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from prunesearch.cluster.config import dump_config, load_config
from prunesearch.cluster.driver import (
    CHECKPOINT_PAUSE_ENV,
    PREPARE_PAUSE_ENV,
    STATE_FILE,
    run_search,
)
from prunesearch.cluster.journal import read_journal
from prunesearch.cluster.storage import fetch_run, mirror_run

ray = pytest.importorskip("ray")

BUDGET = 60
RAW_CONFIG = {
    "method": "hamp", "seed": 7,
    "evaluator": {"kind": "synthetic", "synthetic_sleep_s": 0.05, "synthetic_jitter": 0.5},
    "search": {"budget": BUDGET, "pop_size": 12,
               "local_search": {"parents": 3, "samples_per_parent": 30, "max_moves": 4}},
    "cluster": {"num_evaluators": 2},
}


@pytest.fixture(scope="module")
def ray_address() -> str:
    if ray.is_initialized():
        ray.shutdown()
    # Room for the actors of a killed driver that Ray is still cleaning up.
    ray.init(address="local", resources={"evaluator": 16}, num_cpus=2, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(ray_address, tmp_path_factory) -> dict:
    """The uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run_dir.mkdir()
    config = load_config(RAW_CONFIG)
    dump_config(config, run_dir / "config.yaml")
    summary = run_search(config, run_dir, log=lambda line: None)
    assert summary["status"] == "complete"
    return _outcome(run_dir)


def _outcome(run_dir: Path) -> dict:
    records = read_journal(run_dir / "journal.jsonl")
    with open(run_dir / "pareto.csv") as handle:
        front = {int(row["id"]): row["genome"] for row in csv.DictReader(handle)}
    return {"genomes": {r["id"]: tuple(r["genome"]) for r in records},
            "objectives": {r["id"]: r["objectives"] for r in records},
            "front": front}


def _assert_same_as_reference(run_dir: Path, reference: dict) -> None:
    outcome = _outcome(run_dir)
    assert sorted(outcome["genomes"]) == list(range(BUDGET))  # every id once, none lost
    assert len(set(outcome["genomes"].values())) == BUDGET  # no genome evaluated twice
    assert outcome["genomes"] == reference["genomes"]
    assert outcome["objectives"] == reference["objectives"]
    assert outcome["front"] == reference["front"]


def _start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    path = cwd / f"driver-{time.monotonic_ns()}.out"
    log = open(path, "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "prunesearch", *args], cwd=cwd,
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    proc.output_path = path  # type: ignore[attr-defined]
    return proc


def _lines(run_dir: Path) -> int:
    path = run_dir / "journal.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], *, delay: float = 0.0,
               timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"driver exited (rc {proc.returncode}) before the kill point"
        assert time.monotonic() < deadline, "kill point not reached in time"
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _resume_in_process(run_dir: Path) -> tuple[dict, list[str]]:
    config = load_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    lines: list[str] = []
    summary = run_search(config, run_dir, resume=True, log=lines.append)
    assert summary["status"] == "complete"
    assert summary["evaluations"] == BUDGET
    return summary, lines


def _write_config(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**RAW_CONFIG, **overrides}))
    return path


def test_sigkill_at_random_moments_then_resume_from_the_mirror(
        ray_address, reference, tmp_path: Path) -> None:
    """Two SIGKILLs at seeded random journal positions (plus a random delay, so they land
    mid-generation), a torn journal line, and the last resume from the ``file://`` mirror."""
    rng = random.Random(2024)
    run_dir = tmp_path / "run"
    storage = f"file://{tmp_path / 'bucket'}"
    job = _write_config(tmp_path, storage=storage)
    first = rng.randint(4, 20)
    second = rng.randint(first + 12, 45)

    proc = _start(["run", str(job), "--output", str(run_dir), "--address", ray_address], tmp_path)
    _kill_when(proc, lambda: _lines(run_dir) >= first, delay=rng.uniform(0.0, 0.15))
    killed_at = _lines(run_dir)
    assert killed_at < BUDGET

    proc = _start(["resume", str(run_dir), "--address", ray_address], tmp_path)
    _kill_when(proc, lambda: _lines(run_dir) >= second, delay=rng.uniform(0.0, 0.15))
    assert killed_at < _lines(run_dir) < BUDGET
    mirror = tmp_path / "bucket" / "run"
    assert (mirror / "journal.jsonl").exists() and (mirror / STATE_FILE).exists()

    # The local disk is gone; the run continues from its mirror.
    local = tmp_path / "restored"
    fetch_run(f"{storage}/run", local)
    # A crash in the middle of a journal append leaves a torn last line.
    with open(local / "journal.jsonl", "ab") as handle:
        handle.write(b'{"id": 999, "generation": 3, "genome": [1, 2')
    summary, lines = _resume_in_process(local)
    assert any("torn" in line for line in lines)
    assert any(line.startswith("resuming") for line in lines)
    _assert_same_as_reference(local, reference)
    # The resumed run keeps mirroring to the same place, under the original run name.
    assert summary["storage_uri"] == f"{storage}/run"
    assert read_journal(mirror / "journal.jsonl") == read_journal(local / "journal.jsonl")


def test_sigkill_mid_checkpoint_then_sigterm_then_resume(ray_address, reference,
                                                         tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    job = _write_config(tmp_path)
    temp = run_dir / "state" / ".driver.pkl.tmp"
    proc = _start(["run", str(job), "--output", str(run_dir), "--address", ray_address],
                  tmp_path, env={CHECKPOINT_PAUSE_ENV: "0.5"})
    # After the first generation is journaled, the next checkpoint's temp file is written and
    # the driver sleeps before os.replace: kill it there.
    _kill_when(proc, lambda: _lines(run_dir) >= 12 and temp.exists())
    assert temp.exists() and (run_dir / STATE_FILE).exists()

    # SIGTERM (what `ray job stop` or a scheduler sends): interrupted, state kept, exit 130.
    proc = _start(["resume", str(run_dir), "--address", ray_address], tmp_path)
    deadline = time.monotonic() + 120
    while _lines(run_dir) < 30:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["evaluations"] < BUDGET

    _resume_in_process(run_dir)
    _assert_same_as_reference(run_dir, reference)
    assert not temp.exists()


def _wait_for(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"driver exited (rc {proc.returncode}) too early"
        assert time.monotonic() < deadline, "the awaited moment did not come in time"
        time.sleep(0.02)


def _output(proc: subprocess.Popen) -> str:
    return proc.output_path.read_text()


def test_sigterm_while_the_task_is_prepared_then_resume(ray_address, reference,
                                                        tmp_path: Path) -> None:
    """SIGTERM before anything is checkpointed: exit 130, status interrupted, and
    ``prunesearch resume`` starts the search and ends with the uninterrupted front."""
    run_dir = tmp_path / "run"
    job = _write_config(tmp_path)
    proc = _start(["run", str(job), "--output", str(run_dir), "--address", ray_address],
                  tmp_path, env={PREPARE_PAUSE_ENV: "60"})
    log = run_dir / "driver.log"
    _wait_for(proc, lambda: log.exists() and "preparing" in log.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130, _output(proc)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert not (run_dir / STATE_FILE).exists() and _lines(run_dir) == 0

    proc = _start(["resume", str(run_dir), "--address", ray_address], tmp_path)
    assert proc.wait(timeout=300) == 0, _output(proc)
    assert "starting the search" in _output(proc)
    _assert_same_as_reference(run_dir, reference)


def test_a_second_run_on_a_live_directory_is_refused_and_the_first_is_intact(
        ray_address, reference, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    job = _write_config(tmp_path)
    first = _start(["run", str(job), "--output", str(run_dir), "--address", ray_address],
                   tmp_path)
    _wait_for(first, lambda: _lines(run_dir) >= 1)
    # Held mid-run (stopped, its lock still held) while the others try, so that it cannot
    # finish first on a slow machine: CI once saw the 60-evaluation run complete before the
    # second command started, and `resume` then (rightly) said "already complete".
    first.send_signal(signal.SIGSTOP)
    try:
        for args in (["run", str(job), "--output", str(run_dir), "--overwrite"],
                     ["resume", str(run_dir)]):
            second = subprocess.run([sys.executable, "-m", "prunesearch", *args, "--address",
                                     ray_address], cwd=tmp_path, capture_output=True,
                                    text=True, timeout=120)
            lines = [line for line in second.stderr.splitlines() if line.strip()]
            assert second.returncode == 2, second.stderr
            assert len(lines) == 1 and f"in use by process {first.pid}" in lines[0], (
                second.stderr)
        assert _lines(run_dir) < BUDGET  # the first really was live throughout
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, _output(first)
    _assert_same_as_reference(run_dir, reference)
    assert not list(tmp_path.glob(".run.replaced-*"))


def test_mirror_copies_new_files_and_drops_models_that_left_the_front(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "models").mkdir(parents=True)
    (run_dir / "state").mkdir()
    (run_dir / "config.yaml").write_text("seed: 0\n")
    (run_dir / "journal.jsonl").write_text('{"id": 0}\n')
    (run_dir / "models" / "0.json").write_text("{}")
    (run_dir / "state" / "driver.pkl").write_bytes(b"state-1")
    (run_dir / "state" / ".driver.pkl.tmp").write_bytes(b"half-written")
    uri = f"file://{tmp_path / 'mirror'}"
    assert mirror_run(run_dir, uri) == 4
    mirror = tmp_path / "mirror"
    assert not (mirror / "state" / ".driver.pkl.tmp").exists()

    (run_dir / "models" / "0.json").unlink()
    (run_dir / "models" / "3.json").write_text("{}")
    with open(run_dir / "journal.jsonl", "a") as handle:
        handle.write('{"id": 1}\n')
    mirror_run(run_dir, uri)
    assert sorted(p.name for p in (mirror / "models").iterdir()) == ["3.json"]
    assert (mirror / "journal.jsonl").read_text() == '{"id": 0}\n{"id": 1}\n'

    restored = fetch_run(uri, tmp_path / "restored")
    assert (restored / "state" / "driver.pkl").read_bytes() == b"state-1"
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        fetch_run(f"file://{tmp_path / 'nothing'}", tmp_path / "x")

