"""``run_halp``: one network per target in a search-compatible run directory; resume skips
finished targets; ``export`` reads it."""

from __future__ import annotations

import csv
import json

import pytest

from prunesearch.cluster.config import load_config
from prunesearch.cluster.halp_runner import run_halp
from prunesearch.cluster.report import PARETO_COLUMNS
from prunesearch.methods.errors import UsageError


def _config(**halp):
    return load_config({
        "method": "halp", "seed": 0,
        "data": {"name": "digits", "val_size": 300},
        "model": {"name": "digits-cnn", "pretrain_epochs": 20},
        "hardware": {"batch_size": 64, "threads": 1, "granularity": 8, "warmup": 3,
                     "repeats": 10, "calibration_genomes": 2, "table_warmup": 2,
                     "table_repeats": 10},
        "evaluator": {"finetune_steps": 0, "batch_size": 32, "augmentation": False,
                      "bn_recalibration_batches": 0},
        "halp": {"latency_targets": [0.7, 0.4], "pruning_steps": 2, "interval": 3,
                 "finetune_steps": 6, "batch_size": 32, "augmentation": False, **halp},
        "cluster": {"num_evaluators": 2},
    })


def test_run_halp_writes_one_network_per_target_and_resume_skips_done(local_ray, tmp_path):
    run_dir = tmp_path / "halp"
    summary = run_halp(_config(), run_dir, address=None, resume=False, log=lambda line: None)
    assert summary["method"] == "halp" and summary["status"] == "complete"
    assert summary["evaluations"] == 2 and summary["wall_s"] > 0
    for name in ("pareto.csv", "pareto.png", "summary.json", "journal.jsonl",
                 "latency_table.json", "state/meta.json", "models/0.pt", "models/1.json"):
        assert (run_dir / name).exists(), name
    with (run_dir / "pareto.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == PARETO_COLUMNS
        rows = {int(r["id"]): r for r in reader}
    assert sorted(rows) == [0, 1]
    for cid, target in enumerate(summary["targets_ms"]):
        assert float(rows[cid]["latency_ms"]) <= target + 1e-9
        assert float(rows[cid]["latency_ms_measured"]) > 0

    # Lose target 1 (as if the runner died before it finished): resume runs only that one.
    lines = (run_dir / "journal.jsonl").read_text().splitlines()
    keep = [line for line in lines if json.loads(line)["id"] == 0]
    (run_dir / "journal.jsonl").write_text("\n".join(keep) + "\n")
    measured = json.loads((run_dir / "state" / "measured.json").read_text())
    (run_dir / "state" / "measured.json").write_text(json.dumps({"0": measured["0"]}))
    before = (run_dir / "models" / "0.pt").stat().st_mtime_ns
    seen: list[str] = []
    again = run_halp(_config(), run_dir, address=None, resume=True, log=seen.append)
    assert again["status"] == "complete" and again["evaluations"] == 2
    assert any("1 already done" in line for line in seen)
    assert not any("target 0: " in line and "submitted" in line for line in seen)
    assert (run_dir / "models" / "0.pt").stat().st_mtime_ns == before
    ids = [json.loads(line)["id"] for line in (run_dir / "journal.jsonl").read_text().splitlines()]
    assert ids == [0, 1]

    from prunesearch.cluster.export import export_member

    info = export_member(run_dir, "fastest", tmp_path / "fast.pt")
    assert info["weights"] == "search" and (tmp_path / "fast.pt").exists()


def test_unreachable_target_is_refused_before_any_work(tmp_path):
    with pytest.raises(UsageError, match="outside the reachable table latencies"):
        run_halp(_config(latency_targets=[1000.0], target_unit="ms"), tmp_path / "r", address=None, resume=False,
                 log=lambda line: None)
    assert not (tmp_path / "r" / "journal.jsonl").exists()


def test_a_target_prints_one_progress_line_per_pruning_step(tmp_path, capsys):
    # What a Ray worker prints for one target, and Ray forwards to the driver's terminal.
    import numpy as np

    from prunesearch.cluster.halp_runner import _halp_target
    from prunesearch.methods.task import build_task

    config = _config(pruning_steps=3, finetune_steps=2)
    task = build_task(config, tmp_path)
    lat = task.cost.evaluate(np.stack([task.upper]))["latency_ms"]
    result = _halp_target(task.payload(), config.halp, 0.8 * float(lat[0]), 0, 1, index=5)
    assert result["status"] == "ok", result.get("reason")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("target 5:")]
    assert [line.split(":")[1].strip() for line in lines] == \
        [f"HALP step {k}/3" for k in (1, 2, 3)]
