"""The end of a search: every front member re-timed end to end on an idle device, and a
warning when the search-time latency table disagrees with those timings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.cluster.run_store import ModelStore, read_measured, write_measured

__all__ = ["TABLE_WARN_ERROR", "retime_front", "table_warning"]

#: Median relative table error against end-to-end timings above which the driver warns.
TABLE_WARN_ERROR = 0.20


def retime_front(run_dir: Path, front_ids: list[int], by_id: Mapping[int, Mapping[str, Any]], *,
                 models: ModelStore, measure: Callable[[Any, Any], Mapping[str, float]],
                 where: str, log: Callable[[str], None]) -> dict[str, dict[str, float]] | None:
    """Re-time the front members not yet in ``state/measured.json``, saving after each one (an
    interrupted re-timing resumes where it stopped).

    Args:
        run_dir: the run directory.
        front_ids: candidate ids of the front.
        by_id: journal records by id.
        models: where the members' fine-tuned weights are.
        measure: ``measure(genome, weights) -> timing`` on an idle device.
        where: what does the timing, for the log line.
        log: progress lines.

    Returns:
        Every measurement of the run, keyed by candidate id as text; ``None`` when every
        member was already measured.
    """
    measured = {str(k): v for k, v in read_measured(run_dir).items()}
    todo = sorted(cid for cid in front_ids if str(cid) not in measured)
    if not todo:
        return None
    log(f"re-timing {len(todo)} front members end to end on {where}")
    for cid in todo:
        timing = measure(by_id[cid]["genome"], models.load_weights(cid))
        measured[str(cid)] = {k: float(v) for k, v in dict(timing).items()}
        write_measured(run_dir, measured)
    return measured


def table_warning(by_id: Mapping[int, Mapping[str, Any]],
                  measured: Mapping[str, Mapping[str, float]]) -> str | None:
    """A warning line when the search-time latency objective disagrees with end-to-end timing.

    The table is calibrated once, at start-up; if the device was busy then (or is now), every
    table latency is off by about the same factor and the user should know before trusting
    absolute figures (the ranking usually survives).

    Returns:
        The line, or ``None`` when the median relative error is within :data:`TABLE_WARN_ERROR`.
    """
    errors = []
    for key, timing in measured.items():
        record = by_id.get(int(key))
        table_ms = (record or {}).get("objectives", {}).get("latency_ms")
        real_ms = timing.get("latency_ms_measured")
        if table_ms and real_ms:
            errors.append(abs(table_ms - real_ms) / real_ms)
    if not errors or float(np.median(errors)) <= TABLE_WARN_ERROR:
        return None
    return (f"warning: the latency table is off by a median {np.median(errors):.0%} against "
            "end-to-end timings of the front (latency_ms vs latency_ms_measured in pareto.csv); "
            "the device was probably busy while the table was built or calibrated. Trust "
            "latency_ms_measured; for the next run keep the device idle during start-up (and "
            "delete $PRUNESEARCH_CACHE/latency, default ~/.cache/prunesearch/latency, to "
            "re-time the cached entries).")
