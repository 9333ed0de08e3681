"""The journal (append + fsync, torn tail dropped) and atomic checkpoint writes. No Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from prunesearch.cluster.journal import (
    JOURNAL_FIELDS,
    Journal,
    atomic_write_bytes,
    read_journal,
)


def _record(cid: int, **extra) -> dict:
    record = {
        "id": cid, "generation": 0, "genome": np.array([cid, 2, 3]), "channels": [4, 8, 12],
        "status": "ok", "reason": None,
        "objectives": {"error": np.float64(0.1 + cid / 7), "latency_ms": 1.5, "memory_mb": 2.0},
        "metrics": {"macs": np.int64(10), "params": 3.0, "val_acc": 0.9},
        "hardware": {"device": "cpu", "runtime": "eager", "dtype": "float32", "batch_size": 1},
        "attempt": 1, "wall_s": 0.01,
    }
    record.update(extra)
    return record


def test_append_round_trips_exact_floats_and_field_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        stored = [journal.append(_record(i)) for i in range(3)]
    records = read_journal(path)
    assert records == stored
    assert [list(r)[: len(JOURNAL_FIELDS)] for r in records] == [list(JOURNAL_FIELDS)] * 3
    # The value told to the algorithm must equal the one a resumed driver reads back.
    assert records[2]["objectives"]["error"] == 0.1 + 2 / 7
    assert records[0]["genome"] == [0, 2, 3]


def test_append_refuses_a_record_missing_fields(tmp_path: Path) -> None:
    record = _record(0)
    del record["attempt"]
    with Journal(tmp_path / "j.jsonl") as journal, pytest.raises(ValueError, match="attempt"):
        journal.append(record)


def test_non_finite_values_are_written_as_null(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        journal.append(_record(0, status="failed", reason="nan",
                               objectives={"error": math.nan, "latency_ms": 1.0, "memory_mb": 1.0}))
    assert read_journal(path)[0]["objectives"]["error"] is None


@pytest.mark.parametrize("tail", [b'{"id": 3, "generation": 0, "gen', b'{"id": 3}'])
def test_torn_last_line_is_dropped_logged_and_truncated(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "journal.jsonl"
    with Journal(path) as journal:
        for i in range(3):
            journal.append(_record(i))
    good = path.read_bytes()
    with open(path, "ab") as handle:  # a write cut by SIGKILL: no newline at the end
        handle.write(tail)
    lines: list[str] = []
    records = read_journal(path, log=lines.append)
    assert [r["id"] for r in records] == [0, 1, 2]
    assert len(lines) == 1 and "torn" in lines[0]
    assert path.read_bytes() == good  # the next append starts on a fresh line
    with Journal(path) as journal:
        journal.append(_record(3))
    assert [r["id"] for r in read_journal(path)] == [0, 1, 2, 3]


def test_corruption_before_the_last_line_raises(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text(json.dumps({"id": 0}) + "\nnot json\n" + json.dumps({"id": 1}) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        read_journal(path)


def test_atomic_write_keeps_the_old_file_until_replace(tmp_path: Path) -> None:
    path = tmp_path / "state" / "driver.pkl"
    atomic_write_bytes(path, b"old")
    seen: list[bytes] = []

    def before_replace(tmp: Path) -> None:
        # A driver killed here leaves the previous checkpoint intact and a stray temp file.
        seen.append(path.read_bytes())
        assert tmp.read_bytes() == b"new"

    atomic_write_bytes(path, b"new", before_replace=before_replace)
    assert seen == [b"old"]
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["driver.pkl"]
