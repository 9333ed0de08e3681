"""``hardware.runtime: onnxruntime`` through a quickstart-sized search, end to end (issue 16):
the table, its calibration and the front's re-timing all measured in ONNX Runtime."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[2]


def test_onnxruntime_runtime_runs_a_quickstart_search(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "prunesearch", "run", "configs/quickstart.yaml", "--output",
         str(run_dir), "--set", "hardware.runtime=onnxruntime", "--set", "search.budget=8",
         "--set", "search.pop_size=4", "--set", "hardware.repeats=6", "--set",
         "hardware.calibration_genomes=2", "--set", "hardware.calibration_rounds=1", "--set",
         "hardware.granularity=8", "--set",
         "model.pretrain_epochs=5", "--set", "evaluator.finetune_steps=5"],
        cwd=REPO, capture_output=True, text=True, timeout=400,
        env={**__import__("os").environ, "PRUNESEARCH_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((run_dir / "latency_table.json").read_text())
    assert table["key"]["runtime"] == "onnxruntime"
    assert table["key"]["runtime_version"].startswith("onnxruntime ")
    settings = table["timing"]["runtime_settings"]
    assert settings["provider"] == "CPUExecutionProvider"
    assert settings["intra_op_num_threads"] == 1 and settings["inter_op_num_threads"] == 1
    assert len(table["calibration_points"]) == 3 and table["entries"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["latency_table"]["timing"]["runtime_settings"] == settings
    assert summary["latency_table"]["check"]["scored"] >= 1
    with (run_dir / "pareto.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(float(r["latency_ms_measured"]) > 0 for r in rows)
    assert "latency_ms_recalibrated" in rows[0]
    assert "on the driver" in (run_dir / "driver.log").read_text()
