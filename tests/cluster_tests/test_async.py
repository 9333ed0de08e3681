"""search.mode: async on local Ray: every actor busy beyond what one ask gives, the journaled tell
order, exact resume after SIGKILL (equal to an uninterrupted run told in the same order), and the
dashboard metrics in both modes.

Evaluation times are fixed by seed (the synthetic evaluator sleeps a seeded duration per
candidate id, proportional to its MACs), objectives are deterministic.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from prunesearch.cluster.async_loop import TELL_ORDER_ENV
from prunesearch.cluster.config import dump_config, load_config
from prunesearch.cluster.driver import STATE_FILE, run_search
from prunesearch.cluster.journal import read_journal
from prunesearch.search.settings import ConfigError

ray = pytest.importorskip("ray")

BUDGET = 40
# Sleeps of 0.5 s (scaled by MACs) make the run last a few seconds: at 0.12 s it ran at ~60
# evaluations/s and could end before the SIGKILL test reached its kill point (CI, stop 27).
RAW = {
    "method": "hamp", "seed": 11,
    "evaluator": {"kind": "synthetic", "synthetic_sleep_s": 0.5, "synthetic_jitter": 0.5,
                  "synthetic_duration": "macs"},
    "search": {"budget": BUDGET, "pop_size": 6, "mode": "async", "async_ask_size": 2,
               "async_checkpoint_s": 0.6,
               "local_search": {"parents": 2, "samples_per_parent": 20, "max_moves": 2}},
    "cluster": {"num_evaluators": 5},
}


@pytest.fixture(scope="module")
def ray_address() -> str:
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", resources={"evaluator": 16}, num_cpus=2, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _new_run(tmp_path: Path, name: str, raw: dict) -> tuple[Path, object]:
    run_dir = tmp_path / name
    run_dir.mkdir()
    config = load_config(raw)
    dump_config(config, run_dir / "config.yaml")
    return run_dir, config


def _groups(run_dir: Path) -> list[list[int]]:
    """The journaled tell order: candidate ids by tell group, in journal order."""
    groups: dict[int, list[int]] = {}
    for record in read_journal(run_dir / "journal.jsonl"):
        groups.setdefault(int(record["tell"]), []).append(int(record["id"]))
    assert sorted(groups) == list(range(len(groups))), "tell groups are not contiguous"
    return [groups[i] for i in range(len(groups))]


def _outcome(run_dir: Path) -> dict:
    records = read_journal(run_dir / "journal.jsonl")
    with open(run_dir / "pareto.csv") as handle:
        front = {int(row["id"]): row["genome"] for row in csv.DictReader(handle)}
    return {"genomes": {r["id"]: tuple(r["genome"]) for r in records},
            "objectives": {r["id"]: r["objectives"] for r in records}, "front": front}


def test_async_mode_is_validated() -> None:
    with pytest.raises(ConfigError, match="search.mode"):
        load_config({**RAW, "search": {**RAW["search"], "mode": "barrier"}})
    with pytest.raises(ConfigError, match="async"):
        load_config({"method": "clad", "search": {"mode": "async"}})
    assert load_config({"method": "hamp"}).search.mode == "generational"
    with pytest.raises(ConfigError, match="search.async_queue_margin"):
        load_config({**RAW, "search": {**RAW["search"], "async_queue_margin": -1}})
    assert load_config({**RAW, "search": {**RAW["search"], "async_queue_margin": 0}}
                       ).search.async_queue_margin == 0


def test_async_search_keeps_more_actors_busy_than_one_ask_gives(ray_address, tmp_path) -> None:
    run_dir, config = _new_run(tmp_path, "async", RAW)
    lines: list[str] = []
    summary = run_search(config, run_dir, log=lines.append)
    assert summary["status"] == "complete" and summary["evaluations"] == BUDGET
    records = read_journal(run_dir / "journal.jsonl")
    assert sorted(r["id"] for r in records) == list(range(BUDGET))
    assert len({tuple(r["genome"]) for r in records}) == BUDGET  # no genome twice
    tells = [r["tell"] for r in records]
    assert tells == sorted(tells)  # journaled in the order told
    # One ask gives 2 offspring + at most 1 local-search move; the pool still ran full.
    stats = next(line for line in lines if line.startswith("dispatch:"))
    most = int(re.search(r"at most (\d+) in flight", stats).group(1))
    assert 3 < most <= 5, stats


def test_job_feed_serves_ask_groups_in_order_longest_first_within_and_retries_first() -> None:
    from prunesearch.cluster.actors import JobFeed, PoolJob

    feed = JobFeed()
    for cid, macs in enumerate([3.0, 9.0, 1.0, 9.0, 5.0]):
        feed.put(PoolJob(candidate_id=cid, genome=(cid,), seed=0), macs, group=1)
    # A later ask's wide candidate waits for the earlier group (no starvation of narrow ones).
    feed.put(PoolJob(candidate_id=5, genome=(5,), seed=0), 99.0, group=2)
    lost = PoolJob(candidate_id=7, genome=(7,), seed=0, attempt=2)
    feed.retry(lost)
    assert len(feed) == 7
    order = [feed.pop().candidate_id for _ in range(7)]
    # The re-submission, then group 1 by MACs (ties by id), then group 2.
    assert order == [7, 1, 3, 4, 0, 2, 5]
    assert feed.pop() is None


def test_job_feed_wakes_a_waiting_dispatcher_the_moment_a_job_is_queued() -> None:
    """The dispatch thread waits on the feed while an evaluator is idle: a job queued by the
    main thread must end that wait at once, not at the end of the poll interval."""
    import threading

    from prunesearch.cluster.actors import JobFeed, PoolJob

    feed = JobFeed()
    start = time.perf_counter()
    assert feed.wait(0.05) is False  # nothing queued: the full timeout passes
    assert time.perf_counter() - start >= 0.045
    timer = threading.Timer(0.05, feed.put, args=(PoolJob(candidate_id=1, genome=(1,), seed=0),))
    start = time.perf_counter()
    timer.start()
    assert feed.wait(5.0) is True
    waited = time.perf_counter() - start
    assert 0.04 <= waited < 1.0, waited  # woken by the put, long before the 5 s timeout
    assert feed.wait(5.0) is True  # a queued job: no wait at all
    assert feed.pop().candidate_id == 1


@pytest.mark.parametrize("device_budget", [False, True], ids=["no-budget", "device-budget"])
def test_sigkill_then_resume_equals_the_uninterrupted_run_of_the_same_arrival_order(
        ray_address, tmp_path, device_budget) -> None:
    raw = RAW
    if device_budget:
        # search.max_latency_ms: the repair draws from the algorithm's generator, which the
        # replay must restore. Budgeted networks are small and their MACs-scaled sleeps short:
        # longer sleeps keep the run going past the kill point.
        from prunesearch.methods.synthetic import SyntheticTask

        dense = SyntheticTask(load_config(RAW)).dense_objectives()["latency_ms"]
        raw = {**RAW, "evaluator": {**RAW["evaluator"], "synthetic_sleep_s": 1.5},
               "search": {**RAW["search"], "max_latency_ms": 0.35 * dense}}
    run_dir = tmp_path / "killed"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(raw))
    out = open(tmp_path / "driver.out", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "prunesearch", "run", str(job), "--output", str(run_dir),
         "--address", ray_address], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    journal, state = run_dir / "journal.jsonl", run_dir / STATE_FILE
    # Kill once a periodic checkpoint (not only the first) was written and 3 more results were
    # journaled after it (the next checkpoint is 0.6 s away): resume must replay those tells.
    stamps: list[int] = []  # checkpoint mtimes seen
    lines_at_checkpoint = 0
    while True:
        assert proc.poll() is None, (tmp_path / "driver.out").read_text()[-2000:]
        assert time.monotonic() < deadline, "kill point not reached"
        lines = journal.read_bytes().count(b"\n") if journal.exists() else 0
        if state.exists() and (not stamps or state.stat().st_mtime_ns != stamps[-1]):
            stamps.append(state.stat().st_mtime_ns)
            lines_at_checkpoint = lines
        if len(stamps) >= 2 and lines >= lines_at_checkpoint + 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    killed_at = len(read_journal(journal))
    assert killed_at < BUDGET and (run_dir / STATE_FILE).exists()

    lines: list[str] = []
    config = load_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    summary = run_search(config, run_dir, resume=True, log=lines.append)
    assert summary["status"] == "complete" and summary["evaluations"] == BUDGET
    assert any(line.startswith("resuming") and "(async)" in line for line in lines), lines[:5]
    assert any(line.startswith("replayed") for line in lines), lines[:5]
    resumed = _outcome(run_dir)
    assert sorted(resumed["genomes"]) == list(range(BUDGET))
    assert len(set(resumed["genomes"].values())) == BUDGET

    # The uninterrupted run, told in the order the killed-and-resumed run journaled.
    order = _groups(run_dir)
    (tmp_path / "order.json").write_text(json.dumps(order))
    ref_dir, ref_config = _new_run(tmp_path, "reference", raw)
    os.environ[TELL_ORDER_ENV] = str(tmp_path / "order.json")
    try:
        ref_summary = run_search(ref_config, ref_dir, log=lambda line: None)
    finally:
        os.environ.pop(TELL_ORDER_ENV)
    assert ref_summary["status"] == "complete"
    assert _groups(ref_dir) == order
    reference = _outcome(ref_dir)
    assert resumed["genomes"] == reference["genomes"]
    assert resumed["objectives"] == reference["objectives"]
    assert resumed["front"] == reference["front"]
    if device_budget:
        limit = raw["search"]["max_latency_ms"]
        assert all(o["latency_ms"] <= limit for o in resumed["objectives"].values())


def test_dashboard_metrics_in_both_modes(ray_address, tmp_path, monkeypatch) -> None:
    from prunesearch.cluster import metrics

    calls: list[dict] = []
    real_update = metrics.RunMetrics.update

    def recorded(self, **kwargs):
        calls.append(kwargs)
        return real_update(self, **kwargs)

    monkeypatch.setattr(metrics.RunMetrics, "update", recorded)
    raw = {**RAW, "evaluator": {"kind": "synthetic"}, "search": {**RAW["search"], "budget": 24}}
    for mode in ("generational", "async"):
        calls.clear()
        run_dir, config = _new_run(tmp_path, mode,
                                   {**raw, "search": {**raw["search"], "mode": mode}})
        lines: list[str] = []
        assert run_search(config, run_dir, log=lines.append)["status"] == "complete"
        assert not any("metrics" in line and "fail" in line for line in lines), lines
        assert len(calls) >= 2, mode
        evaluations = [c["evaluations"] for c in calls]
        assert evaluations == sorted(evaluations) and evaluations[-1] == 24, (mode, evaluations)
        assert all(c["hypervolume"] is None or c["hypervolume"] >= 0 for c in calls)
        assert all(c["front_size"] >= 1 and c["evals_per_s"] >= 0 for c in calls)
        assert calls[-1]["generation"] >= 1
