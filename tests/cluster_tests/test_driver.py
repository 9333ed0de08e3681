"""The generational search driver on a local Ray instance, with the synthetic evaluator."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prunesearch.cluster.config import config_to_dict, dump_config, load_config
from prunesearch.cluster.driver import (
    candidate_seed,
    connect_ray,
    diff_search_keys,
    plan_batch,
    run_search,
)
from prunesearch.cluster.journal import JOURNAL_FIELDS, read_journal
from prunesearch.cluster.report import PARETO_COLUMNS, write_report
from prunesearch.search.indicators import non_dominated

ray = pytest.importorskip("ray")


def _config(**sections: Any):
    raw: dict[str, Any] = {
        "method": "hamp", "seed": 3,
        "evaluator": {"kind": "synthetic"},
        "search": {"budget": 48, "pop_size": 12,
                   "local_search": {"parents": 3, "samples_per_parent": 30, "max_moves": 4}},
        "cluster": {"num_evaluators": 2},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return load_config(raw)


def _run(tmp_path: Path, name: str, config, lines: list[str] | None = None) -> tuple[Path, dict]:
    run_dir = tmp_path / name
    run_dir.mkdir()
    dump_config(config, run_dir / "config.yaml")
    summary = run_search(config, run_dir, log=(lines.append if lines is not None else print))
    return run_dir, summary


def _objectives(record: dict) -> list[float]:
    o = record["objectives"]
    return [o["error"], o["latency_ms"], o["memory_mb"]]


# ---------------------------------------------------------------------------- pure helpers
def test_plan_batch_answers_known_and_repeated_genomes_once() -> None:
    known = {(1, 1): 0, (2, 2): 1}
    plan = plan_batch([(3, 3), (1, 1), (3, 3), (4, 4), (5, 5)], known, next_id=2, remaining=5)
    assert plan.new == ((2, (3, 3)), (3, (4, 4)), (4, (5, 5)))
    assert plan.ids == (2, 0, 2, 3, 4)
    assert plan.keep == (0, 1, 2, 3, 4)


def test_plan_batch_truncates_new_genomes_to_the_budget() -> None:
    plan = plan_batch([(1,), (2,), (1,), (3,), (9,)], {(9,): 7}, next_id=10, remaining=2)
    assert plan.new == ((10, (1,)), (11, (2,)))
    # Known genomes after the cut are still answered (they cost no evaluation).
    assert plan.keep == (0, 1, 2, 4) and plan.ids == (10, 11, 10, 7)


def test_candidate_seed_depends_on_run_seed_and_id_only() -> None:
    assert candidate_seed(3, 5) == candidate_seed(3, 5)
    assert len({candidate_seed(3, i) for i in range(50)}) == 50
    assert candidate_seed(3, 5) != candidate_seed(4, 5)


def test_diff_search_keys_names_search_changes_only() -> None:
    saved = config_to_dict(_config())
    changed = config_to_dict(_config(seed=4, search={"budget": 10},
                                     cluster={"num_evaluators": 5}, storage="file:///tmp/x"))
    assert diff_search_keys(saved, changed) == ["search.budget", "seed"]
    assert diff_search_keys(saved, saved) == []


def test_connect_ray_starts_a_private_instance_never_a_bare_init(monkeypatch) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = _config(cluster={"num_evaluators": 3, "evaluator_resource": 0.5})
    assert connect_ray(None, config) is True
    assert calls[-1]["address"] == "local"
    assert calls[-1]["resources"] == {"evaluator": 1.5}
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert connect_ray(None, config) is False
    assert calls[-1]["address"] == "10.0.0.1:6379"
    assert connect_ray("auto", config) is False and calls[-1]["address"] == "auto"


# ------------------------------------------------------------------------------ searches
@pytest.fixture(scope="module")
def tiny_search(local_ray, tmp_path_factory) -> tuple[Path, dict, list[str]]:
    lines: list[str] = []
    run_dir, summary = _run(tmp_path_factory.mktemp("tiny"), "hamp", _config(), lines)
    return run_dir, summary, lines


def test_tiny_search_writes_a_complete_run_directory(tiny_search) -> None:
    run_dir, summary, lines = tiny_search
    assert summary["status"] == "complete"
    assert summary["evaluations"] == 48 and summary["failed"] == 0

    records = read_journal(run_dir / "journal.jsonl")
    assert sorted(r["id"] for r in records) == list(range(48))
    assert all(list(r) == list(JOURNAL_FIELDS) for r in records)
    assert len({tuple(r["genome"]) for r in records}) == 48  # never evaluated twice
    assert all(r["channels"] == [4 * g for g in r["genome"]] for r in records)

    # pareto.csv holds exactly the non-dominated journal records, with the re-timed latency.
    F = np.array([_objectives(r) for r in records])
    expected = {records[i]["id"] for i in non_dominated(F)}
    with open(run_dir / "pareto.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == PARETO_COLUMNS
    assert {int(row["id"]) for row in rows} == expected
    assert len(rows) == summary["front_size"] >= 3
    assert all(row["latency_ms_measured"] not in ("", None) for row in rows)
    front_F = np.array([[float(r["error"]), float(r["latency_ms"]), float(r["memory_mb"])]
                        for r in rows])
    assert len(non_dominated(front_F)) == len(rows)
    assert (run_dir / "pareto.png").stat().st_size > 1000
    # Only current front members keep a model file.
    kept = {int(p.name.split(".")[0]) for p in (run_dir / "models").iterdir()}
    assert kept == expected

    # One progress line per generation; the hypervolume grows over the search.
    progress = [ln for ln in lines if ln.startswith("gen ")]
    assert progress and re.match(r"gen 1 \| evals 12/48 \(failed 0\) \| front \d+ \| HV [\d.]+ \| "
                                 r"op \S+ \| [\d.]+ evals/s \| \d+s", progress[0])
    hv = [float(re.search(r"HV ([\d.]+)", ln).group(1)) for ln in progress]
    assert hv[-1] > hv[0]
    assert summary["hypervolume"] == pytest.approx(hv[-1], abs=1e-4)
    assert "gen 1 |" in (run_dir / "driver.log").read_text()

    # `prunesearch report` re-renders the same figures from the run directory alone.
    (run_dir / "pareto.csv").unlink()
    again = write_report(run_dir)
    assert again["front_size"] == summary["front_size"]
    assert again["hypervolume"] == summary["hypervolume"]
    assert again["status"] == "complete"
    assert (run_dir / "pareto.csv").exists()


def test_arrival_order_never_changes_a_decision(local_ray, tmp_path: Path) -> None:
    """Random sleeps on three actors shuffle the arrival order; the search must not notice."""
    base = _config(method="nsga2", search={"budget": 30})
    _, calm = _run(tmp_path, "calm", base)
    shuffled_config = _config(method="nsga2", search={"budget": 30},
                              evaluator={"synthetic_sleep_s": 0.02, "synthetic_jitter": 1.0},
                              cluster={"num_evaluators": 3})
    _, shuffled = _run(tmp_path, "shuffled", shuffled_config)

    def by_id(name: str) -> dict[int, list[int]]:
        return {r["id"]: r["genome"] for r in read_journal(tmp_path / name / "journal.jsonl")}

    assert by_id("calm") == by_id("shuffled")
    assert calm["hypervolume"] == shuffled["hypervolume"]


def test_a_run_directory_holding_a_search_is_not_restarted(tiny_search) -> None:
    run_dir, _, _ = tiny_search
    with pytest.raises(ValueError, match="resume"):
        run_search(_config(), run_dir, log=lambda line: None)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["evaluations"] == 48
    assert len(read_journal(run_dir / "journal.jsonl")) == 48


def test_driver_warns_when_the_latency_table_disagrees_with_end_to_end_timing() -> None:
    from prunesearch.cluster.driver import _Driver

    driver = object.__new__(_Driver)  # only the bookkeeping _check_table reads
    lines: list[str] = []
    driver.log = lines.append
    driver.by_id = {i: {"objectives": {"latency_ms": 10.0}} for i in range(3)}
    driver._check_table({str(i): {"latency_ms_measured": 10.5} for i in range(3)})
    assert lines == []  # 5% off: fine
    driver._check_table({str(i): {"latency_ms_measured": 5.0} for i in range(3)})
    assert len(lines) == 1 and "off by a median 100%" in lines[0]
