"""Evaluators that crash their process, diverge (NaN) or die for good: the search still
finishes and accounts for every candidate."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunesearch.cluster.config import dump_config, load_config
from prunesearch.cluster.driver import run_search
from prunesearch.cluster.journal import read_journal
from prunesearch.methods.synthetic import SyntheticTask

ray = pytest.importorskip("ray")

CRASH_ALWAYS = 5
CRASH_ONCE = 8
DIVERGES = 3


@pytest.fixture
def faulty_payload(monkeypatch, tmp_path: Path) -> None:
    """Candidate 5 kills its actor's process every time, 8 on its first attempt only, and 3
    comes back with a NaN error (status ok)."""
    original = SyntheticTask.payload
    markers = tmp_path / "markers"
    markers.mkdir()

    def payload(self):
        return {**original(self), "crash_ids": [CRASH_ALWAYS], "crash_once_ids": [CRASH_ONCE],
                "crash_marker_dir": str(markers), "nan_ids": [DIVERGES]}

    monkeypatch.setattr(SyntheticTask, "payload", payload)


def test_crashing_candidates_are_retried_then_failed(local_ray, faulty_payload, capfd,
                                                      tmp_path: Path) -> None:
    # One restart per actor: the first death of each actor is healed by Ray's restart, a
    # second one (candidate 5 dies three times on two actors) needs the pool to start a
    # replacement actor. Both paths are exercised by one run.
    config = load_config({
        "method": "random", "seed": 1,
        "evaluator": {"kind": "synthetic", "synthetic_sleep_s": 0.01},
        "search": {"budget": 20, "pop_size": 10},
        "cluster": {"num_evaluators": 2, "max_retries": 2, "max_restarts": 1},
    })
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_config(config, run_dir / "config.yaml")
    lines: list[str] = []
    summary = run_search(config, run_dir, log=lines.append)

    assert summary["status"] == "complete"
    records = {r["id"]: r for r in read_journal(run_dir / "journal.jsonl")}
    assert sorted(records) == list(range(20))  # every candidate accounted for, once
    assert summary["evaluations"] == 20 and summary["failed"] == 2

    crashed = records[CRASH_ALWAYS]
    assert crashed["status"] == "failed"
    assert crashed["attempt"] == 3  # 1 + max_retries
    assert "died 3 times" in crashed["reason"]
    recovered = records[CRASH_ONCE]
    assert recovered["status"] == "ok" and recovered["attempt"] == 2
    diverged = records[DIVERGES]
    assert diverged["status"] == "failed" and "non-finite" in diverged["reason"]
    assert all(r["status"] == "ok" and r["attempt"] == 1 for cid, r in records.items()
               if cid not in (CRASH_ALWAYS, CRASH_ONCE, DIVERGES))
    assert sum("died on candidate" in line for line in lines) == 4
    assert any("started evaluator-" in line for line in lines)  # a replacement actor
    # Failed candidates never reach the front.
    front_ids = {int(line.split(",")[0])
                 for line in (run_dir / "pareto.csv").read_text().splitlines()[1:]}
    assert front_ids and not front_ids & {CRASH_ALWAYS, DIVERGES}
    # Restarted and replacement actors fetched the payload from the pool's holder actor: no
    # object-store constructor arguments (Ray logs an error line for each such actor, and
    # cannot restore them on restart), and the holder went with the pool.
    assert "constructor arguments in the object store" not in capfd.readouterr().err
    alive = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    assert not [n for n in alive if n.startswith(("payload-", "evaluator-"))], alive
