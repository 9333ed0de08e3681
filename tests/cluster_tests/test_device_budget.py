"""search.max_latency_ms / max_memory_mb: a device budget that no evaluated candidate exceeds, in
both search modes, stated in the log and summary; a budget no network can meet is refused."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_helpers import REPO

from prunesearch.cluster.config import dump_config, load_config
from prunesearch.cluster.driver import run_search
from prunesearch.cluster.html_report import write_html_report
from prunesearch.cluster.journal import read_journal
from prunesearch.cluster.report import write_report
from prunesearch.cluster.run_store import read_measured, write_measured
from prunesearch.methods.synthetic import SyntheticTask

ray = pytest.importorskip("ray")


def _raw(mode: str, **search) -> dict:
    return {"method": "hamp", "seed": 5, "evaluator": {"kind": "synthetic"},
            "search": {"budget": 36, "pop_size": 8, "mode": mode, **search,
                       "local_search": {"parents": 2, "samples_per_parent": 20, "max_moves": 2}},
            "cluster": {"num_evaluators": 2}}


def _dense() -> dict:
    return SyntheticTask(load_config(_raw("generational"))).dense_objectives()


@pytest.fixture(scope="module")
def ray_address() -> str:
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", resources={"evaluator": 4}, num_cpus=2, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.mark.parametrize("mode", ["generational", "async"])
def test_no_candidate_beyond_the_budget_is_evaluated(ray_address, tmp_path, mode) -> None:
    dense = _dense()
    latency, memory = 0.35 * dense["latency_ms"], 0.5 * dense["memory_mb"]
    config = load_config(_raw(mode, max_latency_ms=latency, max_memory_mb=memory))
    run_dir = tmp_path / mode
    run_dir.mkdir()
    dump_config(config, run_dir / "config.yaml")
    lines: list[str] = []
    summary = run_search(config, run_dir, address=ray_address, log=lines.append)
    assert summary["status"] == "complete" and summary["evaluations"] == 36
    records = read_journal(run_dir / "journal.jsonl")
    assert len(records) == 36
    assert len({tuple(r["genome"]) for r in records}) == 36
    assert all(r["objectives"]["latency_ms"] <= latency for r in records)
    assert all(r["objectives"]["memory_mb"] <= memory for r in records)
    # The budget binds: the search went up to it (repaired genomes sit near the limit).
    assert max(r["objectives"]["latency_ms"] for r in records) > 0.9 * latency
    saved = json.loads((run_dir / "summary.json").read_text())
    # The synthetic evaluator times a network at its table latency: none is over the budget.
    assert saved["device_budget"] == {"max_latency_ms": latency, "max_memory_mb": memory,
                                      "measured_over": {}}
    assert any(line.startswith("device budget: latency <= ") and "35% of dense" in line
               for line in lines), lines
    # The report states the budget, in the terminal, on the page and as a line on the plot.
    report = write_html_report(run_dir)
    assert report.terminal.startswith(f"device budget: latency <= {latency:.4g} ms (table), "
                                      f"memory <= {memory:.4g} MB\n")
    page = report.path.read_text()
    assert "device budget" in page and f"device budget ({latency:.4g} ms)" in page
    # The budget holds the table latency: a member timed end to end above it is named.
    measured = read_measured(run_dir)
    member = min(measured)
    measured[member] = {**measured[member], "latency_ms_measured": 1.5 * latency}
    write_measured(run_dir, measured)
    summary = write_report(run_dir)
    assert summary["device_budget"]["measured_over"] == {str(member): round(1.5 * latency, 4)}
    assert f"measured end to end above it: {member} (" in write_html_report(run_dir).terminal
    # Progress lines give the best error: under a tight budget HV can read 0 all along.
    assert any(re.search(r"\| HV [0-9.]+ \| best error [0-9.]+ \|", line) for line in lines), lines


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prunesearch", *args], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_a_budget_no_network_meets_is_exit_2_naming_the_floor(tmp_path) -> None:
    out = tmp_path / "run"
    result = _cli("run", "configs/synthetic-small.yaml", "--output", str(out),
                  "--set", "search.max_latency_ms=0.000001")
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip().splitlines()
    assert len(message) == 1, result.stderr
    assert "search.max_latency_ms=1e-06 is below" in message[0]
    assert "narrowest network" in message[0]
    assert not (out / "journal.jsonl").exists()


@pytest.mark.parametrize(("config", "override", "reason"), [
    ("synthetic-small", "search.max_memory_mb=0", "search.max_memory_mb must be > 0"),
    ("clad-resnet20-cifar10-smoke", "search.max_latency_ms=2",
     "a device budget is for the searches of the search driver"),
])
def test_a_bad_budget_is_refused_before_anything_is_created(tmp_path, config, override,
                                                           reason) -> None:
    out = tmp_path / "run"
    result = _cli("run", f"configs/{config}.yaml", "--output", str(out), "--set", override)
    assert result.returncode == 2
    assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def _outcome(run_dir: Path) -> dict:
    records = read_journal(run_dir / "journal.jsonl")
    with open(run_dir / "pareto.csv") as handle:
        front = sorted(int(row["id"]) for row in csv.DictReader(handle))
    return {"genomes": {r["id"]: tuple(r["genome"]) for r in records},
            "objectives": {r["id"]: r["objectives"] for r in records}, "front": front}


def test_sigkill_then_resume_of_a_budgeted_run_equals_the_uninterrupted_one(ray_address,
                                                                            tmp_path) -> None:
    raw = _raw("generational", max_latency_ms=0.35 * _dense()["latency_ms"])
    raw["evaluator"] = {"kind": "synthetic", "synthetic_sleep_s": 0.3}
    reference = tmp_path / "reference"
    reference.mkdir()
    config = load_config(raw)
    dump_config(config, reference / "config.yaml")
    assert run_search(config, reference, address=ray_address,
                      log=lambda line: None)["status"] == "complete"

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "prunesearch", "run", str(job), "--output",
                             str(run_dir)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    journal = run_dir / "journal.jsonl"
    deadline = time.monotonic() + 120
    while not (journal.exists() and journal.read_bytes().count(b"\n") >= 12):
        assert proc.poll() is None and time.monotonic() < deadline, "kill point not reached"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert len(read_journal(journal)) < 36
    resumed = load_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    summary = run_search(resumed, run_dir, resume=True, address=ray_address,
                         log=lambda line: None)
    assert summary["status"] == "complete" and summary["evaluations"] == 36
    assert _outcome(run_dir) == _outcome(reference)


def test_members_timed_above_the_budget_are_named_at_the_end(ray_address, tmp_path,
                                                              monkeypatch) -> None:
    # A device slower than its table: every member re-timed at 1.5x its table latency.
    real = SyntheticTask.measure

    def slower(self, genome, weights=None):
        out = dict(real(self, genome, weights))
        out["latency_ms_measured"] = 1.5 * out["latency_ms_measured"]
        return out

    monkeypatch.setattr(SyntheticTask, "measure", slower)
    latency = 0.35 * _dense()["latency_ms"]
    raw = _raw("generational", max_latency_ms=latency)
    raw["search"]["budget"] = 16
    config = load_config(raw)
    run_dir = tmp_path / "slow"
    run_dir.mkdir()
    dump_config(config, run_dir / "config.yaml")
    lines: list[str] = []
    summary = run_search(config, run_dir, address=ray_address, log=lines.append)
    over = summary["device_budget"]["measured_over"]
    assert over and all(v > latency for v in over.values())
    assert any(line.startswith(f"device budget: {len(over)} of {summary['front_size']} front "
                               "members measured end to end above") for line in lines), lines
