"""A search run's report: ``pareto.csv``, ``pareto.png`` and ``summary.json``.

Everything is derived from the run directory alone (the journal, ``state/meta.json`` with the
dense model's objectives, ``state/measured.json`` with the end-to-end re-timings of front
members), so ``prunesearch report RUN_DIR`` re-renders it at any time, also for a run that is
still going or was interrupted.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.cluster.journal import OBJECTIVE_NAMES, atomic_write_text, read_journal
from prunesearch.cluster.run_store import read_measured, read_meta, search_summary
from prunesearch.methods.io import atomic_path
from prunesearch.search.indicators import non_dominated, normalized_hypervolume

__all__ = [
    "PARETO_COLUMNS",
    "SUMMARY_STATUSES",
    "front_hypervolume",
    "front_records",
    "objectives_of",
    "read_measured",
    "read_meta",
    "write_pareto_csv",
    "write_pareto_png",
    "write_report",
    "write_summary",
]

#: Columns of ``pareto.csv`` (the run-directory contract).
PARETO_COLUMNS = ("id", "genome", "error", "latency_ms", "latency_ms_measured", "memory_mb",
                  "macs", "params", "latency_ms_recalibrated")
SUMMARY_STATUSES = ("running", "complete", "failed", "interrupted")


def objectives_of(record: Mapping[str, Any]) -> np.ndarray | None:
    """(error, latency_ms, memory_mb) of an ok journal record; ``None`` for a failed one."""
    if record.get("status") != "ok":
        return None
    objectives = record.get("objectives") or {}
    values = [objectives.get(name) for name in OBJECTIVE_NAMES]
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return None
    return np.asarray(values, dtype=float)


def front_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The non-dominated ok records (all three objectives minimised), in id order."""
    ok = [(r, f) for r in records if (f := objectives_of(r)) is not None]
    if not ok:
        return []
    keep = non_dominated(np.stack([f for _, f in ok]))
    return sorted((ok[i][0] for i in keep), key=lambda r: int(r["id"]))


def front_hypervolume(front: Sequence[Mapping[str, Any]], dense: Mapping[str, float] | None,
                      max_error_increase: float) -> float | None:
    """Hypervolume of the front normalised by the dense model (docs/METHODS.md); ``None``
    without a dense model."""
    if not dense:
        return None
    if not front:
        return 0.0
    F = np.stack([objectives_of(r) for r in front])
    return float(normalized_hypervolume(F, dense, max_error_increase))


def _number(value: Any) -> Any:
    return "" if value is None else value


def write_pareto_csv(path: Path, front: Sequence[Mapping[str, Any]],
                     measured: Mapping[int, Mapping[str, float]],
                     recalibrated: Mapping[int, float] | None = None) -> None:
    """Write ``pareto.csv``: one row per front member, fastest first.

    The genome is written as its granule counts separated by spaces; the last column,
    ``latency_ms_recalibrated``, is the end-of-run re-calibration of the table
    (:func:`~prunesearch.cluster.retime.latency_check`), empty where there is none.
    """
    recalibrated = recalibrated or {}
    rows = sorted(front, key=lambda r: (r["objectives"]["latency_ms"], int(r["id"])))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PARETO_COLUMNS)
    for record in rows:
        metrics = record.get("metrics") or {}
        timing = measured.get(int(record["id"]), {})
        objectives = record["objectives"]
        writer.writerow([
            int(record["id"]),
            " ".join(str(int(g)) for g in record["genome"]),
            objectives["error"],
            objectives["latency_ms"],
            _number(timing.get("latency_ms_measured")),
            objectives["memory_mb"],
            # Journals written before the rename call MACs "flops".
            _number(metrics.get("macs", metrics.get("flops"))),
            _number(metrics.get("params")),
            _number(recalibrated.get(int(record["id"]))),
        ])
    atomic_write_text(Path(path), buffer.getvalue())


def _read_table(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``latency_table.json`` without its entries (``None``: none or unreadable)."""
    try:
        data = json.loads((Path(run_dir) / "latency_table.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    data.pop("entries", None)
    return data


def write_pareto_png(path: Path, records: Sequence[Mapping[str, Any]],
                     front: Sequence[Mapping[str, Any]], *, title: str = "",
                     max_latency_ms: float | None = None) -> None:
    """Error vs latency: every evaluated candidate in grey, the Pareto front highlighted, and
    the search's device budget (``search.max_latency_ms``) as a dashed line where it had one.

    The front is non-dominated in (error, latency, memory); in this 2-D view its members are
    coloured by memory, so members that look dominated are the ones that win on memory.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    points = np.array([f for r in records if (f := objectives_of(r)) is not None]).reshape(-1, 3)
    front_f = np.array([objectives_of(r) for r in front]).reshape(-1, 3)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    try:
        if len(points):
            ax.scatter(points[:, 1], points[:, 0], s=10, c="0.75", label=f"evaluated ({len(points)})")
        if len(front_f):
            order = np.argsort(front_f[:, 1])
            sc = ax.scatter(front_f[order, 1], front_f[order, 0], s=28, c=front_f[order, 2],
                            cmap="viridis", edgecolors="k", linewidths=0.5, zorder=3,
                            label=f"Pareto front ({len(front_f)})")
            fig.colorbar(sc, ax=ax, label="memory (MB)")
        if max_latency_ms is not None:
            ax.axvline(max_latency_ms, ls="--", lw=1, color="tab:purple",
                       label=f"device budget ({max_latency_ms:.4g} ms)")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("validation error")
        if title:
            ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if len(points) or len(front_f):
            ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> None:
    """Write ``summary.json`` atomically.

    Raises:
        ValueError: ``status`` is not one of :data:`SUMMARY_STATUSES`.
    """
    if summary.get("status") not in SUMMARY_STATUSES:
        raise ValueError(f"summary status must be one of {SUMMARY_STATUSES}, "
                         f"got {summary.get('status')!r}")
    atomic_write_text(Path(run_dir) / "summary.json", json.dumps(dict(summary), indent=2) + "\n")


def write_report(run_dir: Path, *, status: str | None = None, wall_s: float | None = None,
                 generations: int | None = None, plots: bool = True,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Render ``pareto.csv``, ``pareto.png`` and ``summary.json`` from the run directory.

    Values not given (status, wall_s, generations) are kept from an existing ``summary.json``.

    Args:
        run_dir: the run directory.
        status: running|complete|failed|interrupted.
        wall_s: wall-clock seconds of the search so far (all sessions together).
        generations: completed generations.
        plots: also write ``pareto.csv`` and ``pareto.png`` (the driver skips them while the
            search runs, to keep per-generation overhead low).
        extra: further summary fields.

    Returns:
        The summary dict.
    """
    run_dir = Path(run_dir)
    records = read_journal(run_dir / "journal.jsonl", repair=False)
    meta = read_meta(run_dir)
    previous: dict[str, Any] = {}
    if (run_dir / "summary.json").exists():
        try:
            previous = json.loads((run_dir / "summary.json").read_text())
        except ValueError:
            previous = {}
    if not isinstance(previous, dict):
        previous = {}
    front = front_records(records)
    dense = meta.get("dense")
    hv = front_hypervolume(front, dense, float(meta.get("hv_max_error_increase", 0.10)))
    summary = search_summary(
        meta, status=status or previous.get("status", "running"), evaluations=len(records),
        failed=sum(1 for r in records if r.get("status") != "ok"), hypervolume=hv,
        wall_s=float(wall_s if wall_s is not None else previous.get("wall_s", 0.0)),
        generations=int(generations if generations is not None
                        else previous.get("generations", 0)),
        front_size=len(front), previous=previous)
    if extra:
        summary.update(extra)
    measured = read_measured(run_dir)
    table = _read_table(run_dir)
    recalibrated: dict[int, float] = {}
    if table is not None:
        summary.setdefault("latency_table", {})["timing"] = table.get("timing") or {}
        if measured:
            from prunesearch.cluster.retime import latency_check

            recalibrated, check = latency_check(front, measured, table)
            summary["latency_table"]["check"] = check
    budget = summary.get("device_budget")
    if budget and budget.get("max_latency_ms") is not None and measured:
        # The search kept the *table* latency within the budget; a member whose end-to-end
        # timing is above it is named (a search under a budget favours networks the table
        # underestimates).
        limit = float(budget["max_latency_ms"])
        over = {}
        for cid in sorted(int(r["id"]) for r in front):
            timed = (measured.get(cid) or {}).get("latency_ms_measured")
            if timed is not None and float(timed) > limit:
                over[str(cid)] = round(float(timed), 4)
        budget["measured_over"] = over
    if plots:
        write_pareto_csv(run_dir / "pareto.csv", front, measured, recalibrated)
        hv_text = f", HV {hv:.4f}" if hv is not None else ""
        budget = summary.get("device_budget") or {}
        write_pareto_png(run_dir / "pareto.png", records, front,
                         title=f"{summary['method']}: {len(records)} evaluated{hv_text}",
                         max_latency_ms=budget.get("max_latency_ms"))
    write_summary(run_dir, summary)
    return summary
