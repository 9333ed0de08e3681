"""The append-only journal of evaluated candidates (``journal.jsonl``) and atomic file writes.

One JSON object per line, one line per candidate (its final attempt), appended, flushed and
fsync'd as each result arrives, so a driver killed at any moment loses at most the line it was
writing. Reading the journal back drops a torn last line (and truncates the file to the last
complete line, so that later appends start on a fresh line). Finished evaluations are immutable
facts: resuming a search means reading them back, never evaluating a journaled genome again.

Fields of a line: ``id``, ``generation``, ``genome`` (granules),
``channels``, ``status`` (ok|failed), ``reason``, ``objectives`` (``error``, ``latency_ms``,
``memory_mb``), ``metrics`` (``macs``, ``params``, ``val_acc``, ...), ``hardware`` (``device``,
``runtime``, ``dtype``, ``batch_size``), ``attempt``, ``wall_s``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.methods.errors import RunStateError
from prunesearch.methods.io import atomic_write_bytes, atomic_write_text

__all__ = [
    "JOURNAL_FIELDS",
    "OBJECTIVE_NAMES",
    "Journal",
    "atomic_write_bytes",
    "atomic_write_text",
    "journal_record",
    "read_journal",
    "to_jsonable",
]

#: Keys of every journal line, in the order they are written.
JOURNAL_FIELDS = (
    "id", "generation", "genome", "channels", "status", "reason", "objectives", "metrics",
    "hardware", "attempt", "wall_s",
)
#: Objective names, in the order of the algorithm's F columns.
OBJECTIVE_NAMES = ("error", "latency_ms", "memory_mb")


def to_jsonable(value: Any) -> Any:
    """Plain JSON data from numpy scalars/arrays, tuples and mappings (non-finite floats: null).

    JSON's float text round-trips exactly, so a value read back from the journal equals the
    value the driver told the algorithm: a resumed search makes the same decisions.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def journal_record(*, candidate_id: int, generation: int, genome: Sequence[int],
                   result: Mapping[str, Any], channels: Sequence[int],
                   cheap_metrics: Mapping[str, Any], hardware: Mapping[str, Any],
                   attempt: int) -> dict[str, Any]:
    """The journal line of one evaluated candidate (its final attempt).

    An ``ok`` result with a missing or non-finite objective is recorded as ``failed`` (the
    search must never be told NaN); a failure always carries a reason. The evaluator's metrics
    are laid over the task's analytic ones (``macs``, ``params``).
    """
    objectives = dict(result.get("objectives") or {})
    status = result.get("status", "failed")
    reason = result.get("reason")
    values = [objectives.get(k) for k in OBJECTIVE_NAMES]
    if status == "ok" and any(v is None or not math.isfinite(float(v)) for v in values):
        status, reason = "failed", f"non-finite objectives {values}"
    if status != "ok":
        status = "failed"
        reason = reason or "evaluator reported failure without a reason"
    metrics = dict(cheap_metrics)
    metrics.update(result.get("metrics") or {})
    return {
        "id": int(candidate_id),
        "generation": int(generation),
        "genome": [int(g) for g in genome],
        "channels": [int(c) for c in channels],
        "status": status,
        "reason": reason,
        "objectives": {k: objectives.get(k) for k in OBJECTIVE_NAMES},
        "metrics": metrics,
        "hardware": dict(hardware),
        "attempt": attempt,
        "wall_s": float(result.get("wall_s") or 0.0),
    }


class Journal:
    """Appends one candidate per line to ``journal.jsonl``; each line is fsync'd.

    Open it after :func:`read_journal` has repaired a torn tail (``run_search`` does both).

    Args:
        path: the journal file (created if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Write ``record`` as one line, flush and fsync it; return the record as read back.

        Raises:
            ValueError: a field of :data:`JOURNAL_FIELDS` is missing.
        """
        missing = [k for k in JOURNAL_FIELDS if k not in record]
        if missing:
            raise ValueError(f"journal record lacks fields {missing}: {dict(record)!r}")
        ordered = {k: record[k] for k in JOURNAL_FIELDS}
        ordered.update({k: v for k, v in record.items() if k not in ordered})
        line = json.dumps(to_jsonable(ordered), allow_nan=False, separators=(",", ":"))
        self._handle.write(line + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        return json.loads(line)

    def close(self) -> None:
        """Close the file (appends after this raise)."""
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> Journal:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journal(path: Path, *, log: Callable[[str], None] | None = None,
                 repair: bool = True) -> list[dict[str, Any]]:
    """Read every complete line of a journal.

    A last line that is incomplete (no newline) or not valid JSON is a write torn by a crash: it
    is dropped and logged, and with ``repair`` the file is truncated to the last complete line so
    that the next append does not glue onto it. A bad line *before* the end is corruption, not a
    crash, and raises.

    Args:
        path: the journal file; a missing file reads as empty.
        log: receives one line when a torn tail is dropped.
        repair: truncate a torn tail in place.

    Returns:
        The records in file order.

    Raises:
        ValueError: a line other than the last is not valid JSON.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    good_end = 0
    pos = 0
    lines = data.split(b"\n")
    for index, raw in enumerate(lines):
        is_last = index == len(lines) - 1
        end = pos + len(raw) + (0 if is_last else 1)
        if not raw.strip():
            pos = end
            if not is_last:
                good_end = end
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        # A last line without its newline was cut mid-write, even if it happens to parse.
        complete = isinstance(record, dict) and not is_last
        if not complete:
            if not is_last and not _only_blank(lines[index + 1:]):
                raise RunStateError(f"{path}: line {index + 1} is not valid JSON (corrupt journal; "
                                    "only a torn last line is repaired)")
            if log is not None:
                log(f"journal: dropped a torn last line ({len(raw)} bytes) at line {index + 1} "
                    f"of {path.name}")
            break
        records.append(record)
        good_end = end
        pos = end
    if repair and good_end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(good_end)
            handle.flush()
            os.fsync(handle.fileno())
    return records


def _only_blank(rest: Iterable[bytes]) -> bool:
    return all(not r.strip() for r in rest)
