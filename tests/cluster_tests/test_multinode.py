"""A simulated multi-node cluster (``ray.cluster_utils.Cluster``: head + 2 worker nodes).

The head offers no ``evaluator`` resource, each worker node offers 2 units, so evaluators can
only run on the worker nodes. Losing a node mid-search must not lose a candidate.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from prunesearch.cluster.actors import EvaluatorPool, PoolJob  # noqa: E402
from prunesearch.cluster.config import ClusterSettings, load_config  # noqa: E402
from prunesearch.methods.synthetic import SyntheticTask  # noqa: E402

UNITS_PER_NODE = 2


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, list]]:
    """The cluster and its two worker nodes (in start order)."""
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": 80 * 2**20,
                        "include_dashboard": False},
    )
    workers = [
        cluster.add_node(num_cpus=1, resources={"evaluator": UNITS_PER_NODE},
                         object_store_memory=80 * 2**20)
        for _ in range(2)
    ]
    cluster.wait_for_nodes()
    try:
        yield cluster, workers
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def test_evaluator_actors_spread_over_the_worker_nodes(cluster):
    cluster, workers = cluster
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        config = load_config({"evaluator": {"kind": "synthetic", "synthetic_sleep_s": 0.2}})
        task = SyntheticTask(config)
        settings = ClusterSettings(num_evaluators=2 * UNITS_PER_NODE)
        pool = EvaluatorPool(payload_ref=ray.put(task.payload()), cluster=settings, threads=1,
                             namespace="multinode-spread", log=lambda line: None)
        results: dict[int, dict] = {}
        try:
            genomes = [tuple(int(g) for g in task.upper)] * 8
            jobs = [PoolJob(candidate_id=i, genome=g, seed=0) for i, g in enumerate(genomes)]
            pool.run(jobs, lambda job, result: results.__setitem__(job.candidate_id, result),
                     failed_result=lambda reason: {"status": "failed", "reason": reason})
        finally:
            pool.shutdown()
        assert sorted(results) == list(range(8))
        assert all(r["status"] == "ok" for r in results.values())
        worker_ids = {n.node_id for n in workers}
        used = {r["node"] for r in results.values()}
        # Both worker nodes evaluated, the head (no evaluator resource) never did.
        assert used == worker_ids
    finally:
        ray.shutdown()


def _remove_when_running(cluster: Cluster, node, journal: Path, done: threading.Event,
                         removed: list[float]) -> None:
    """Remove ``node`` as soon as the first result is journaled (the search is under way)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not done.is_set():
        if journal.exists() and journal.read_text().count("\n") >= 1:
            cluster.remove_node(node, allow_graceful=False)
            removed.append(time.monotonic())
            return
        time.sleep(0.05)


def test_losing_a_node_mid_search_accounts_for_every_candidate(cluster, tmp_path):
    cluster, workers = cluster
    from prunesearch.cluster import driver
    budget = 24
    config = load_config(
        Path(__file__).resolve().parents[2] / "configs" / "synthetic-small.yaml",
        {
            "evaluator": {"synthetic_sleep_s": 0.5, "synthetic_jitter": 0.1},
            "search": {"pop_size": 8, "budget": budget},
            # Each node holds 2 evaluators: removing one kills two calls in flight.
            "cluster": {"num_evaluators": 2 * UNITS_PER_NODE, "max_retries": 2,
                        "max_restarts": 1},
        },
    )
    run_dir = tmp_path / "lose-node"
    victim = workers[-1]
    done, removed = threading.Event(), []
    remover = threading.Thread(
        target=_remove_when_running,
        args=(cluster, victim, run_dir / "journal.jsonl", done, removed), daemon=True,
    )
    remover.start()
    # A hung search must fail the test, not CI: SIGTERM makes the driver stop as interrupted.
    watchdog = threading.Timer(90.0, os.kill, args=(os.getpid(), signal.SIGTERM))
    watchdog.daemon = True
    lines: list[str] = []
    watchdog.start()
    try:
        summary = driver.run_search(config, run_dir, address=cluster.address, log=lines.append)
    finally:
        watchdog.cancel()
        done.set()
        remover.join(timeout=30)
        if ray.is_initialized():
            ray.shutdown()
    assert removed, "the node was not removed during the search"

    assert summary["status"] == "complete", "search did not finish after the node loss:\n" + \
        "\n".join(lines[-15:])
    journal = [json.loads(x) for x in (run_dir / "journal.jsonl").read_text().splitlines()]
    ids = [entry["id"] for entry in journal]
    # One line per candidate: none lost, none journaled twice.
    assert len(ids) == len(set(ids)) == budget == summary["evaluations"]
    for entry in journal:
        assert entry["status"] in ("ok", "failed")
        if entry["status"] == "failed":
            assert entry["reason"], entry
    # The removal hit evaluations in flight: they were retried (or failed with a reason).
    hit = [e for e in journal if e["attempt"] > 1 or e["status"] == "failed"]
    assert hit, "no candidate was in flight on the removed node"
    assert any("died" in line or "lost" in line.lower() for line in lines), lines[-10:]


def test_losing_a_node_mid_async_search_accounts_for_every_candidate(cluster, tmp_path):
    """search.mode: async: the lost node's candidates go back first in line; every id is
    journaled once, and the tell order covers every candidate exactly once."""
    cluster, _ = cluster
    from prunesearch.cluster import driver
    # A node of its own to lose (an earlier test may have removed one of the fixture's).
    victim = cluster.add_node(num_cpus=1, resources={"evaluator": UNITS_PER_NODE},
                              object_store_memory=80 * 2**20)
    cluster.wait_for_nodes()
    budget = 24
    config = load_config(
        Path(__file__).resolve().parents[2] / "configs" / "synthetic-small.yaml",
        {
            "method": "hamp",
            "evaluator": {"synthetic_sleep_s": 0.5, "synthetic_jitter": 0.5},
            "search": {"pop_size": 6, "budget": budget, "mode": "async",
                       "local_search": {"parents": 2, "samples_per_parent": 20}},
            # Every unit of every worker node holds an evaluator, so the victim runs some.
            "cluster": {"num_evaluators": UNITS_PER_NODE * len(cluster.worker_nodes),
                        "max_retries": 2, "max_restarts": 1},
        },
    )
    run_dir = tmp_path / "lose-node-async"
    done, removed = threading.Event(), []
    remover = threading.Thread(
        target=_remove_when_running,
        args=(cluster, victim, run_dir / "journal.jsonl", done, removed), daemon=True,
    )
    remover.start()
    watchdog = threading.Timer(90.0, os.kill, args=(os.getpid(), signal.SIGTERM))
    watchdog.daemon = True
    lines: list[str] = []
    watchdog.start()
    try:
        summary = driver.run_search(config, run_dir, address=cluster.address, log=lines.append)
    finally:
        watchdog.cancel()
        done.set()
        remover.join(timeout=30)
        if ray.is_initialized():
            ray.shutdown()
    assert removed, "the node was not removed during the search"
    assert summary["status"] == "complete", "\n".join(lines[-15:])
    journal = [json.loads(x) for x in (run_dir / "journal.jsonl").read_text().splitlines()]
    ids = [entry["id"] for entry in journal]
    assert sorted(ids) == list(range(budget)) and summary["evaluations"] == budget
    tells = [entry["tell"] for entry in journal]
    assert tells == sorted(tells)
    for entry in journal:
        assert entry["status"] == "ok" or entry["reason"], entry
    hit = [e for e in journal if e["attempt"] > 1 or e["status"] == "failed"]
    assert hit, "no candidate was in flight on the removed node"
    assert any("died" in line for line in lines), lines[-10:]
