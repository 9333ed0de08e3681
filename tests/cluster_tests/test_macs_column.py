"""The MACs column is called ``macs``; run directories written when it was ``flops`` still read."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from prunesearch.cluster.export import read_front
from prunesearch.cluster.report import write_report


def _record(cid: int, error: float, latency: float, metric: str) -> dict:
    return {"id": cid, "generation": 0, "genome": [cid + 1], "channels": [4 * (cid + 1)],
            "status": "ok", "reason": None,
            "objectives": {"error": error, "latency_ms": latency, "memory_mb": 1.0},
            "metrics": {metric: 1000 * (cid + 1), "params": 10 * (cid + 1)},
            "hardware": {}, "attempt": 1, "wall_s": 0.1}


def test_an_old_journal_reports_its_flops_as_macs(tmp_path: Path) -> None:
    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    lines = [_record(0, 0.2, 1.0, "flops"), _record(1, 0.1, 2.0, "flops")]
    (run_dir / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    write_report(run_dir, status="complete", plots=True)
    with (run_dir / "pareto.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert "flops" not in rows[0] and [float(r["macs"]) for r in rows] == [1000.0, 2000.0]
    assert [r["macs"] for r in read_front(run_dir)] == [1000.0, 2000.0]


def test_an_old_pareto_csv_reads_its_flops_column_as_macs(tmp_path: Path) -> None:
    (tmp_path / "pareto.csv").write_text(
        "id,genome,error,latency_ms,latency_ms_measured,memory_mb,flops,params\n"
        "3,1 2,0.1,2.0,2.1,1.0,5000,50\n")
    assert read_front(tmp_path)[0]["macs"] == 5000.0
