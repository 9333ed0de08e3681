"""The end of a search: every front member re-timed end to end on an idle device, and a
warning when the search-time latency table disagrees with those timings."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.cluster.run_store import ModelStore, read_measured, write_measured
from prunesearch.methods.rounds import combine_rounds

__all__ = ["TABLE_WARN_ERROR", "latency_check", "retime_front", "table_warning"]

#: Median relative table error against end-to-end timings above which the driver warns.
TABLE_WARN_ERROR = 0.20


def retime_front(run_dir: Path, front_ids: list[int], by_id: Mapping[int, Mapping[str, Any]], *,
                 models: ModelStore, measure: Callable[[Any, Any], Mapping[str, float]],
                 where: str, log: Callable[[str], None],
                 rounds: int = 1, statistic: str = "median") -> dict[str, dict[str, Any]] | None:
    """Re-time the front members not yet in ``state/measured.json``, in ``rounds`` passes over
    the whole front (alternating direction), saving after each timing (an interrupted
    re-timing resumes where it stopped). A member's figures are the medians (or, with
    ``statistic="min"``, the fastest) of its passes, so
    a slow spell of the machine (a neighbour's burst; seconds long on a shared VM) spoils one
    pass of several members rather than every figure of one; the passes are kept in its
    ``rounds`` list.

    Args:
        run_dir: the run directory.
        front_ids: candidate ids of the front.
        by_id: journal records by id.
        models: where the members' fine-tuned weights are.
        measure: ``measure(genome, weights) -> timing`` on an idle device.
        where: what does the timing, for the log line.
        log: progress lines.
        rounds: passes over the front (``hardware.calibration_rounds``).
        statistic: how the passes combine (``hardware.rounds_statistic``: median or min).

    Returns:
        Every measurement of the run, keyed by candidate id as text; ``None`` when every
        member was already measured.
    """
    rounds = max(1, int(rounds))
    measured = {str(k): v for k, v in read_measured(run_dir).items()}

    def done(cid: int) -> int:
        entry = measured.get(str(cid))
        if entry is None:
            return 0
        # Entries written before passes existed are one complete measurement.
        return len(entry["rounds"]) if "rounds" in entry else rounds

    todo = sorted(cid for cid in front_ids if done(cid) < rounds)
    if not todo:
        return None
    passes = f" in {rounds} passes" if rounds > 1 else ""
    log(f"re-timing {len(todo)} front members end to end on {where}{passes}")
    weights = {}
    for r in range(rounds):
        for cid in (todo if r % 2 == 0 else list(reversed(todo))):
            if done(cid) > r:
                continue
            entry = measured.get(str(cid), {"rounds": []})
            if cid not in weights:
                weights[cid] = models.load_weights(cid)
            timing = {k: float(v) for k, v in dict(measure(by_id[cid]["genome"],
                                                           weights[cid])).items()}
            passes_so_far = [*entry["rounds"], timing]
            keys = sorted({k for p in passes_so_far for k in p})
            measured[str(cid)] = {
                **{k: combine_rounds([p[k] for p in passes_so_far if k in p], statistic)
                   for k in keys},
                "rounds": passes_so_far}
            write_measured(run_dir, measured)
    return measured


def latency_check(records: Sequence[Mapping[str, Any]],
                  measured: Mapping[Any, Mapping[str, float]],
                  table: Mapping[str, Any] | None) -> tuple[dict[int, float], dict[str, Any]]:
    """The search-time table against the end-to-end re-timing of ``records`` (the front).

    Errors are scored only on members that are not calibration networks of the table (its
    ``calibration_genomes``: the calibration was fitted on those, an error there is in sample).
    The end-of-run re-calibration fits the table's calibration kind to the (raw table sum,
    measured) pairs of the other re-timed members (leave one out), so each member's
    ``latency_ms_recalibrated`` is predicted without its own timing; it is reported beside
    ``latency_ms``, which never changes.

    Returns:
        ``{id: latency_ms_recalibrated}`` and a summary (scored and excluded counts, median and
        max relative error of the table and of the re-calibration, the table's statistic).
    """
    from prunesearch.methods.cost.table import leave_one_out

    table = table or {}
    calibrated_on = {tuple(int(v) for v in g) for g in table.get("calibration_genomes") or []}
    rows = []
    for record in records:
        timing = measured.get(int(record["id"]), measured.get(str(record["id"]), {}))
        real = timing.get("latency_ms_measured")
        raw = (record.get("metrics") or {}).get("latency_table_raw_ms")
        table_ms = (record.get("objectives") or {}).get("latency_ms")
        if real and table_ms:
            rows.append((int(record["id"]), tuple(int(g) for g in record["genome"]),
                         float(table_ms), None if raw is None else float(raw), float(real)))
    with_raw = [r for r in rows if r[3] is not None]
    predicted = leave_one_out([r[3] for r in with_raw], [r[4] for r in with_raw],
                              str(table.get("calibration", "linear")))
    recal = {r[0]: p for r, p in zip(with_raw, predicted) if p is not None}
    scored = [r for r in rows if r[1] not in calibrated_on]
    table_err = [abs(r[2] - r[4]) / r[4] for r in scored]
    recal_err = [abs(recal[r[0]] - r[4]) / r[4] for r in scored if r[0] in recal]
    summary: dict[str, Any] = {
        "statistic": table.get("statistic", "median"),
        "scored": len(scored),
        "excluded_calibration_genomes": len(rows) - len(scored),
    }
    for name, errs in (("table", table_err), ("recalibrated", recal_err)):
        if errs:
            summary[f"{name}_error_median"] = round(float(np.median(errs)), 4)
            summary[f"{name}_error_max"] = round(float(np.max(errs)), 4)
    return recal, summary


def table_warning(by_id: Mapping[int, Mapping[str, Any]],
                  measured: Mapping[str, Mapping[str, float]],
                  table: Mapping[str, Any] | None = None) -> str | None:
    """A warning line when the search-time latency objective disagrees with end-to-end timing.

    The table is calibrated once, at start-up; if the device was busy then (or is now), every
    table latency is off by about the same factor and the user should know before trusting
    absolute figures (the ranking usually survives). Members that are calibration networks of
    ``table`` are not scored.

    Returns:
        The line, or ``None`` when the median relative error is within :data:`TABLE_WARN_ERROR`.
    """
    calibrated_on = {tuple(int(v) for v in g) for g in (table or {}).get("calibration_genomes")
                     or []}
    errors = []
    for key, timing in measured.items():
        record = by_id.get(int(key))
        genome = (record or {}).get("genome")
        if genome is not None and tuple(int(g) for g in genome) in calibrated_on:
            continue
        table_ms = (record or {}).get("objectives", {}).get("latency_ms")
        real_ms = timing.get("latency_ms_measured")
        if table_ms and real_ms:
            errors.append(abs(table_ms - real_ms) / real_ms)
    if not errors or float(np.median(errors)) <= TABLE_WARN_ERROR:
        return None
    return (f"warning: the latency table is off by a median {np.median(errors):.0%} against "
            "end-to-end timings of the front (latency_ms vs latency_ms_measured in pareto.csv); "
            "the device was probably busy while the table was built or calibrated. Trust "
            "latency_ms_measured (latency_ms_recalibrated is the table re-fitted to the "
            "front's timings); for the next run keep the device idle during start-up (a cached "
            "table that disagrees with a fresh calibration is re-timed by itself).")
