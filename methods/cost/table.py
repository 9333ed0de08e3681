"""The per-layer latency lookup table, calibrated against end-to-end timings.

Each distinct layer shape (:meth:`LayerSpec.key`) is timed once in isolation on an idle device
(:func:`~prunesearch.methods.cost.latency.measure_spec`), under a table key naming the device,
runtime, dtype, batch size, thread count and torch version. A network's *raw* table latency is
the sum of its layers' entries. A sum of isolated layers misses what only the whole network
has (Python dispatch between layers, cache effects, kernel fusion under ``compile``; we
measured 72-86% coverage on CPU), so the table is calibrated against end-to-end timings of a few
genomes with a linear fit ``measured = scale * raw + offset_ms`` (least squares; ``scale``
alone, or no calibration, are options). :meth:`LatencyTable.predict` returns the calibrated
figure: the search's latency objective.

Raw entries are cached on disk per table key (``$PRUNESEARCH_CACHE/latency/<key>.json``, default
``~/.cache/prunesearch/latency``); the calibrated table of a run is saved as
``RUN_DIR/latency_table.json`` so a resumed run predicts exactly the same latencies.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from prunesearch.methods.cost.specs import LayerSpec
from prunesearch.methods.errors import PrunesearchError
from prunesearch.methods.io import atomic_write_json, cache_root

__all__ = [
    "CALIBRATIONS",
    "LatencyTable",
    "MissingLatencyEntry",
    "TableKey",
    "default_cache_dir",
    "fit_calibration",
    "leave_one_out",
]

CALIBRATIONS = ("robust", "linear", "scale", "none")

_FORMAT = 1


class MissingLatencyEntry(PrunesearchError, KeyError):
    """A layer shape has no table entry and the table may not time it now."""

    exit_code = 1


def default_cache_dir() -> Path:
    """``$PRUNESEARCH_CACHE/latency`` if set, else ``~/.cache/prunesearch/latency``."""
    return cache_root() / "latency"


@dataclasses.dataclass(frozen=True)
class TableKey:
    """What a latency table is valid for. Entries from another key are never mixed in."""

    device: str
    runtime: str
    dtype: str
    batch_size: int
    threads: int
    torch_version: str
    #: Version of a runtime that is not torch itself (``onnxruntime 1.x``); empty for torch's.
    runtime_version: str = ""

    @classmethod
    def current(cls, *, device: str, runtime: str, dtype: str, batch_size: int,
                threads: int) -> TableKey:
        """The key for a torch device string on this machine (device *name*, torch version)."""
        import torch

        from prunesearch.methods.cost.latency import device_name
        from prunesearch.methods.cost.runtimes import runtime_entry

        settings = runtime_entry(runtime).settings(device, threads)
        version = f"onnxruntime {settings['onnxruntime']}" if "onnxruntime" in settings else ""
        return cls(device=device_name(device), runtime=runtime, dtype=dtype,
                   batch_size=batch_size, threads=threads, torch_version=torch.__version__,
                   runtime_version=version)

    def slug(self) -> str:
        """File-name-safe form of the key."""
        text = (f"{self.device}_{self.runtime}_{self.dtype}_b{self.batch_size}_t{self.threads}"
                f"_torch{self.torch_version}")
        if self.runtime_version:
            text += f"_{self.runtime_version}"
        return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not self.runtime_version:
            data.pop("runtime_version")  # keys of torch runtimes read as before
        return data


class LatencyTable:
    """Per-layer latencies under one :class:`TableKey`, plus the end-to-end calibration.

    Args:
        key: What the entries were measured on.
        entries: ``LayerSpec.key() -> milliseconds`` (median of isolated runs).
        calibration: ``robust`` (scale and offset, Theil-Sen), ``linear`` (scale and offset,
            least squares), ``scale`` (scale only) or ``none``.
        scale: Calibrated multiplier of the raw sum.
        offset_ms: Calibrated additive term.
        calibration_points: ``[(raw_ms, measured_ms), ...]`` the calibration was fitted on.
        device: torch device string used to time missing entries (None: never time).
        warmup: Untimed runs per entry.
        repeats: Timed runs per entry (at most).
        entry_budget_ms: On CPUs, stop timing an entry once its runs add up to this (at least
            5 runs): a 10 ms layer needs fewer runs than a 10 us one for a stable median.
        statistic: Which statistic of an entry's timed runs is the entry (``median``, ``p25``,
            ``p10``, ``min``; see :data:`~prunesearch.methods.cost.latency.STATISTICS`).
        timing: How and under which conditions the table was timed (load average, runtime
            settings, statistic, ...; recorded, never interpreted by predictions).
        calibration_genomes: The genomes the calibration was fitted on (so that errors are
            scored on others).
    """

    def __init__(
        self,
        *,
        key: TableKey,
        entries: dict[str, float] | None = None,
        calibration: str = "linear",
        scale: float = 1.0,
        offset_ms: float = 0.0,
        calibration_points: Sequence[tuple[float, float]] = (),
        device: str | None = None,
        warmup: int = 5,
        repeats: int = 30,
        entry_budget_ms: float | None = 100.0,
        statistic: str = "median",
        timing: dict[str, Any] | None = None,
        calibration_genomes: Sequence[Sequence[int]] = (),
    ) -> None:
        from prunesearch.methods.cost.latency import STATISTICS

        if statistic not in STATISTICS:
            raise ValueError(f"statistic={statistic!r} is not supported; "
                             f"choose one of: {', '.join(STATISTICS)}")
        if calibration not in CALIBRATIONS:
            raise ValueError(
                f"calibration={calibration!r} is not supported; "
                f"choose one of: {', '.join(CALIBRATIONS)}"
            )
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale={scale!r} must be a finite number > 0")
        if not math.isfinite(offset_ms):
            raise ValueError(f"offset_ms={offset_ms!r} must be finite")
        if warmup < 0:
            raise ValueError(f"warmup={warmup} must be >= 0")
        if repeats < 3:
            raise ValueError(f"repeats={repeats} must be >= 3")
        if entry_budget_ms is not None and entry_budget_ms <= 0:
            raise ValueError(f"entry_budget_ms={entry_budget_ms} must be > 0 (or None)")
        self.key = key
        self.entries: dict[str, float] = dict(entries or {})
        self.calibration = calibration
        self.scale = float(scale)
        self.offset_ms = float(offset_ms)
        self.calibration_points = [(float(r), float(m)) for r, m in calibration_points]
        self.device = device
        self.warmup = warmup
        self.repeats = repeats
        self.entry_budget_ms = entry_budget_ms
        self.statistic = statistic
        self.timing: dict[str, Any] = dict(timing or {})
        self.calibration_genomes = [tuple(int(v) for v in g) for g in calibration_genomes]

    # ------------------------------------------------------------------ entries
    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, spec_key: str) -> bool:
        return spec_key in self.entries

    def missing(self, specs: Iterable[LayerSpec]) -> list[LayerSpec]:
        """Distinct specs (by key) that have no entry, in first-seen order."""
        seen: dict[str, LayerSpec] = {}
        for spec in specs:
            k = spec.key()
            if k not in self.entries and k not in seen:
                seen[k] = spec
        return list(seen.values())

    def measure_missing(self, specs: Iterable[LayerSpec]) -> int:
        """Time every spec without an entry (call only while nothing else runs on the device).

        Returns:
            The number of entries added.

        Raises:
            MissingLatencyEntry: entries are missing and the table has no timing device.
        """
        todo = self.missing(specs)
        self.entries.update(self.time_specs(todo))
        return len(todo)

    def time_specs(self, specs: Iterable[LayerSpec]) -> dict[str, float]:
        """Time every spec (entry statistic of its runs; call only while nothing else runs on
        the device) without storing the figures: ``{spec key: ms}``.

        Raises:
            MissingLatencyEntry: there are specs and the table has no timing device.
        """
        todo = list(specs)
        if todo and self.device is None:
            raise MissingLatencyEntry(
                f"{len(todo)} layer shapes (first: {todo[0].key()}) have no latency entry and "
                "this table may not time them here; build the table for these shapes first"
            )
        from prunesearch.methods.cost.latency import measure_spec, statistic

        timed: dict[str, float] = {}
        for spec in todo:
            if spec.batch != self.key.batch_size:
                raise ValueError(
                    f"spec batch {spec.batch} differs from the table's batch_size "
                    f"{self.key.batch_size}"
                )
            result = measure_spec(spec, device=self.device, runtime=self.key.runtime,
                                  dtype=self.key.dtype, threads=self.key.threads,
                                  warmup=self.warmup, repeats=self.repeats,
                                  max_time_ms=self.entry_budget_ms)
            timed[spec.key()] = statistic(result, self.statistic)
        return timed

    def entry(self, spec_key: str) -> float:
        """Raw milliseconds of one layer shape.

        Raises:
            MissingLatencyEntry: no entry for the key.
        """
        try:
            return self.entries[spec_key]
        except KeyError:
            raise MissingLatencyEntry(
                f"layer shape {spec_key} has no latency entry under table {self.key.slug()}"
            ) from None

    # ------------------------------------------------------------------ predictions
    def raw_ms(self, specs: Iterable[LayerSpec]) -> float:
        """Sum of the layers' isolated latencies (uncalibrated)."""
        return float(sum(self.entry(s.key()) for s in specs))

    def calibrate_value(self, raw_ms: float) -> float:
        """Apply the calibration to a raw table sum."""
        return self.scale * raw_ms + self.offset_ms

    def predict(self, specs: Iterable[LayerSpec]) -> float:
        """Calibrated latency (ms per batch) of a network described by its layer specs."""
        return self.calibrate_value(self.raw_ms(specs))

    def calibrate(self, raw_ms: Sequence[float], measured_ms: Sequence[float]) -> None:
        """Fit the calibration to end-to-end timings (in place).

        ``linear`` fits ``measured = scale * raw + offset_ms`` by least squares; with fewer
        than two distinct raw values, or a non-positive fitted slope (noise dominating a narrow
        range), it falls back to ``scale`` = median of measured/raw. ``none`` keeps 1 and 0.

        Raises:
            ValueError: lengths differ, or no points are given for a calibration that needs them.
        """
        if len(raw_ms) != len(measured_ms):
            raise ValueError(f"raw_ms has {len(raw_ms)} values but measured_ms has "
                             f"{len(measured_ms)}")
        self.calibration_points = [(float(r), float(m)) for r, m in zip(raw_ms, measured_ms)]
        self.scale, self.offset_ms = fit_calibration(raw_ms, measured_ms, self.calibration)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (also what travels in an evaluator payload)."""
        return {
            "format": _FORMAT,
            "key": self.key.as_dict(),
            "calibration": self.calibration,
            "scale": self.scale,
            "offset_ms": self.offset_ms,
            "calibration_points": [list(p) for p in self.calibration_points],
            "warmup": self.warmup,
            "repeats": self.repeats,
            "entry_budget_ms": self.entry_budget_ms,
            "statistic": self.statistic,
            "timing": self.timing,
            "calibration_genomes": [list(g) for g in self.calibration_genomes],
            "entries": dict(sorted(self.entries.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, device: str | None = None) -> LatencyTable:
        """Rebuild a table from :meth:`to_dict` output; ``device`` enables timing new shapes."""
        if data.get("format") != _FORMAT:
            raise ValueError(f"latency table format {data.get('format')!r} is not {_FORMAT}")
        return cls(
            key=TableKey(**data["key"]),
            entries={k: float(v) for k, v in data["entries"].items()},
            calibration=data["calibration"],
            scale=data["scale"],
            offset_ms=data["offset_ms"],
            calibration_points=[tuple(p) for p in data.get("calibration_points", [])],
            device=device,
            warmup=data.get("warmup", 5),
            repeats=data.get("repeats", 30),
            entry_budget_ms=data.get("entry_budget_ms", 100.0),
            statistic=data.get("statistic", "median"),
            timing=data.get("timing") or {},
            calibration_genomes=data.get("calibration_genomes") or (),
        )

    def save(self, path: str | Path) -> None:
        """Write the table as JSON, atomically (temp file + rename)."""
        atomic_write_json(path, self.to_dict(), unique=True)

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> LatencyTable:
        """Read a table written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()), device=device)

    # ------------------------------------------------------------------ disk cache of entries
    def cache_path(self, cache_dir: str | Path | None = None) -> Path:
        """Where this key's raw entries are cached."""
        return Path(cache_dir or default_cache_dir()) / f"{self.key.slug()}.json"

    def read_cache(self, cache_dir: str | Path | None = None) -> dict[str, Any] | None:
        """This key's cache file (entries, how they were timed, the calibration fitted with
        them then), or ``None`` when there is none for this key."""
        try:
            cached = json.loads(self.cache_path(cache_dir).read_text())
        except (OSError, ValueError):
            return None
        return cached if cached.get("key") == self.key.as_dict() else None

    def merge_cache(self, cache_dir: str | Path | None = None) -> int:
        """Add entries cached on disk for this key (never overwriting ours). Returns how many.

        Entries timed with another statistic (``median`` for caches that do not say) are not
        mixed in."""
        cached = self.read_cache(cache_dir)
        if cached is None or cached.get("statistic", "median") != self.statistic:
            return 0
        added = 0
        for k, v in cached.get("entries", {}).items():
            if k not in self.entries:
                self.entries[k] = float(v)
                added += 1
        return added

    def write_cache(self, cache_dir: str | Path | None = None, *, replace: bool = False) -> None:
        """Store this key's raw entries in the disk cache, with how they were timed and the
        calibration fitted with them (merged with what is there unless ``replace``)."""
        path = self.cache_path(cache_dir)
        entries = dict(self.entries)
        cached = None if replace else self.read_cache(cache_dir)
        if cached is not None and cached.get("statistic", "median") == self.statistic:
            entries = {**cached.get("entries", {}), **entries}
        # Shared by every run on this machine: unique temp names, no fsync (a lost cache entry
        # is timed again).
        atomic_write_json(path, {"format": _FORMAT, "key": self.key.as_dict(),
                                 "statistic": self.statistic, "timing": self.timing,
                                 "calibration": {"kind": self.calibration, "scale": self.scale,
                                                 "offset_ms": self.offset_ms},
                                 "entries": dict(sorted(entries.items()))},
                          durable=False, unique=True)


def fit_calibration(raw_ms: Sequence[float], measured_ms: Sequence[float],
                    calibration: str) -> tuple[float, float]:
    """``(scale, offset_ms)`` of ``measured = scale * raw + offset_ms`` (see
    :meth:`LatencyTable.calibrate`)."""
    if calibration == "none":
        return 1.0, 0.0
    if not raw_ms:
        raise ValueError(f"calibration={calibration!r} needs at least one timed network")
    scale = float(statistics.median(m / r for r, m in zip(raw_ms, measured_ms)))
    offset = 0.0
    if calibration == "robust" and len(set(raw_ms)) >= 2:
        # Theil-Sen: the median of the pairwise slopes, so that one calibration network timed
        # during a slow spell (a neighbour's burst, a hypervisor steal) does not tilt the line.
        from scipy.stats import theilslopes

        slope, intercept, _, _ = theilslopes(measured_ms, raw_ms)
        if slope > 0:
            scale, offset = float(slope), float(intercept)
    elif calibration == "linear" and len(set(raw_ms)) >= 2:
        n = len(raw_ms)
        mean_r = sum(raw_ms) / n
        mean_m = sum(measured_ms) / n
        var = sum((r - mean_r) ** 2 for r in raw_ms)
        cov = sum((r - mean_r) * (m - mean_m) for r, m in zip(raw_ms, measured_ms))
        slope = cov / var if var > 0 else 0.0
        if slope > 0:
            scale, offset = float(slope), float(mean_m - slope * mean_r)
    return scale, offset


def leave_one_out(raw_ms: Sequence[float], measured_ms: Sequence[float], calibration: str,
                  *, extra: Sequence[tuple[float, float]] = ()) -> list[float | None]:
    """Each point's latency predicted by a calibration fitted on every *other* point (plus
    ``extra`` points, e.g. the table's own calibration networks): an error scored on it is
    out of sample. ``None`` where fewer than two other points remain."""
    out: list[float | None] = []
    for i in range(len(raw_ms)):
        pts = [(r, m) for j, (r, m) in enumerate(zip(raw_ms, measured_ms)) if j != i]
        pts += list(extra)
        if len(pts) < 2:
            out.append(None)
            continue
        scale, offset = fit_calibration([p[0] for p in pts], [p[1] for p in pts], calibration)
        out.append(scale * float(raw_ms[i]) + offset)
    return out
