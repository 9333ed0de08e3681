"""Building the latency table of a genome space on this machine, and calibrating it.

The table (:mod:`~prunesearch.methods.cost.table`) holds the time of every layer shape the
search can produce, timed in isolation; the cost model (:mod:`~prunesearch.methods.cost.model`)
sums it for any genome. Isolated layer times miss what a whole network costs (launches, cache
effects between layers), so the sum is calibrated against end-to-end timings of the dense
network and a few seeded random pruned ones spread over network sizes
(:func:`calibration_genomes`). Everything here times the device: call it only while nothing
else runs there.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunesearch.methods.cost.latency import measure_latency, statistic
from prunesearch.methods.cost.model import CostModel, NotFactorisable, PerGenomeCostModel
from prunesearch.methods.cost.runtimes import runtime_entry
from prunesearch.methods.cost.table import LatencyTable, TableKey
from prunesearch.methods.rounds import combine_rounds
from prunesearch.methods.errors import RunStateError

__all__ = [
    "GenomeSpecs",
    "build_latency_table",
    "calibration_genomes",
    "cost_model",
    "end_to_end",
    "saved_or_built_table",
    "table_key",
    "time_genomes",
]


class GenomeSpecs:
    """Picklable ``genome -> list[LayerSpec]`` of a genome space at one batch size."""

    def __init__(self, space: Any, batch_size: int) -> None:
        self.space = space
        self.batch_size = int(batch_size)

    def __call__(self, genome: Sequence[int]) -> list[Any]:
        from prunesearch.methods.pruning.specs import layer_specs

        return layer_specs(self.space, self.space.channels(genome), batch=self.batch_size)


def calibration_genomes(lower: Sequence[int], upper: Sequence[int], count: int,
                        seed: int) -> list[tuple[int, ...]]:
    """The dense genome plus ``count`` seeded random genomes spread over network sizes.

    Genome ``k`` keeps about ``r_k`` of every group (``r_k`` evenly spaced over 0.3..0.9) with
    per-gene jitter of +-0.2, so the calibration fit covers small and large networks rather
    than clustering at half width as uniform genomes would.
    """
    lo = np.asarray(lower, dtype=np.int64)
    hi = np.asarray(upper, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    genomes = [tuple(int(v) for v in hi)]
    ratios = np.linspace(0.3, 0.9, count) if count > 1 else np.array([0.6] * count)
    for r in ratios:
        u = rng.uniform(r - 0.2, r + 0.2, size=hi.size)
        genomes.append(tuple(int(v) for v in np.clip(np.rint(u * hi), lo, hi)))
    return genomes


def table_key(hardware: Any) -> TableKey:
    """The latency-table key of a ``hardware`` section on this machine."""
    return TableKey.current(device=hardware.device, runtime=hardware.runtime,
                            dtype=hardware.dtype, batch_size=hardware.batch_size,
                            threads=hardware.threads)


def time_genomes(base_model: nn.Module, space: Any, genomes: Sequence[Sequence[int]],
                 hardware: Any, *, rounds: int = 3,
                 between: Callable[[int], None] | None = None) -> list[float]:
    """End-to-end latency (ms) of each genome's pruned network, in interleaved rounds.

    Every round times every network with ``hardware.repeats // rounds`` runs and takes their
    ``hardware.latency_statistic`` (median for sections without one); the result is the
    ``hardware.rounds_statistic`` of a network's round figures (``min`` by default, median
    for sections without one), so a slow spell or a burst of background load spoils one
    round of every network rather than every round of one. ``between(r)`` runs after round
    ``r`` (the table build times a share of its entries there, so that entries and
    calibration networks are timed under the same conditions).
    """
    from prunesearch.methods.pruning import apply_genome

    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    modules = [apply_genome(base_model, space, space.validate(g), importance="l1").module.eval()
               for g in genomes]
    per_round = max(3, hardware.repeats // rounds)
    stat = _hw(hardware, "latency_statistic", "median")
    results: list[list[float]] = [[] for _ in modules]
    for r in range(rounds):
        # Alternate the order: a slow drift (load arriving, a CPU clocking down) does not
        # always fall on the same networks.
        order = range(len(modules)) if r % 2 == 0 else reversed(range(len(modules)))
        for i in order:
            results[i].append(statistic(measure_latency(
                modules[i], space.input_shape, device=hardware.device,
                runtime=hardware.runtime, dtype=hardware.dtype,
                batch_size=hardware.batch_size, threads=hardware.threads,
                warmup=hardware.warmup, repeats=per_round), stat))
        if between is not None:
            between(r)
    how = _hw(hardware, "rounds_statistic", "median")
    return [combine_rounds(r, how) for r in results]


_ALLOCATOR: list[str] = []


def apply_allocator(hardware: Any) -> str:
    """Put this process's C allocator in the mode ``hardware.keep_freed_memory`` asks for, once
    (process-wide and permanent: glibc ``mallopt``); returns the mode in effect."""
    if _ALLOCATOR:
        return _ALLOCATOR[0]
    mode = "default"
    if _hw(hardware, "keep_freed_memory", False):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            # M_TRIM_THRESHOLD (-1), M_MMAP_THRESHOLD (-3): 1 GiB, i.e. keep and reuse.
            if libc.mallopt(-1, 1 << 30) and libc.mallopt(-3, 1 << 30):
                mode = "keep-freed (glibc mallopt)"
        except (OSError, AttributeError):
            mode = "default (keep_freed_memory needs glibc)"
        _ALLOCATOR.append(mode)
    return mode


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _disagreement(cached: dict[str, Any] | None, table: LatencyTable) -> float | None:
    """Median relative difference between the cached calibration's and the fresh calibration's
    predictions at the fresh calibration networks (``None``: nothing to compare)."""
    calibration = (cached or {}).get("calibration")
    if not calibration or not table.calibration_points:
        return None
    scale, offset = float(calibration["scale"]), float(calibration["offset_ms"])
    diffs = [abs(scale * r + offset - m) / m for r, m in table.calibration_points if m > 0]
    return float(np.median(diffs)) if diffs else None


def _hw(hardware: Any, name: str, default: Any) -> Any:
    # Sections built before a setting existed (old pickles, duck-typed test stand-ins).
    return getattr(hardware, name, default)


def build_latency_table(*, base_model: nn.Module, space: Any,
                        cost: CostModel | PerGenomeCostModel, hardware: Any, seed: int,
                        cache_dir: str | Path | None = None,
                        allow_timing: bool = True) -> LatencyTable:
    """Build, time and calibrate the latency table on this machine's ``hardware.device``.

    Call it only while nothing else runs on the device. Raw entries are merged from the disk
    cache; every reachable layer shape that is missing (``cost.specs``) is timed in isolation
    (each entry is ``hardware.latency_statistic`` of its runs), in
    ``hardware.calibration_rounds`` shares, each after one round of end-to-end timings of the
    dense network and ``hardware.calibration_genomes`` random pruned networks
    (:func:`calibration_genomes`, :func:`time_genomes`): entries and calibration see the same
    conditions. Then the calibration (``hardware.calibration``) is fitted. A cached table whose
    recorded calibration predicts these fresh timings off by more than
    ``hardware.cache_tolerance`` (median relative) was timed under other conditions: it is
    dropped and the whole table timed again (recorded in ``table.timing["cache"]``).
    ``cost`` is bound to the finished table.
    """
    started = time.time()
    allocator = apply_allocator(hardware)
    load_start = _load_average()
    statistic = _hw(hardware, "latency_statistic", "median")
    rounds = int(_hw(hardware, "calibration_rounds", 3))
    every_round = _hw(hardware, "rounds_statistic", "median") == "min"
    tolerance = float(_hw(hardware, "cache_tolerance", 0.10))
    table = LatencyTable(key=table_key(hardware), calibration=hardware.calibration,
                         device=hardware.device if allow_timing else None,
                         warmup=hardware.table_warmup, repeats=hardware.table_repeats,
                         statistic=statistic)
    cached = table.read_cache(cache_dir)
    reused = table.merge_cache(cache_dir)
    calibrate = hardware.calibration != "none" and allow_timing
    genomes = (calibration_genomes(space.lower(), space.upper(), hardware.calibration_genomes,
                                   seed) if calibrate else [])
    cache_note = "none" if not reused else "reused"
    timed = 0
    for attempt in range(2):
        todo = table.missing(cost.specs)
        # Networks, a share of the entries, networks, ...: the last round of networks follows
        # the last share, so entries and calibration span the same stretch of time.
        # With rounds_statistic "min" every share is every missing entry, and an entry is the
        # fastest of its timings, as the calibration networks are the fastest of their rounds
        # (with "median" each entry is in one share: its one timing).
        count = max(rounds - 1, 1)
        shares = [list(todo) if every_round else todo[i::count] for i in range(count)]
        fastest: dict[str, float] = {}

        def time_share(r: int) -> None:
            if r < len(shares):
                for key, ms in table.time_specs(shares[r]).items():
                    fastest[key] = min(ms, fastest.get(key, ms))

        if genomes:
            # Raw sums need the entries: the networks are timed first, their raw sums after.
            measured = time_genomes(base_model, space, genomes, hardware, rounds=rounds,
                                    between=time_share)
        else:
            for r in range(len(shares)):
                time_share(r)
        table.entries.update(fastest)
        timed += len(fastest)
        cost.bind(table)
        if genomes:
            raw = [float(v) for v in cost.evaluate(np.asarray(genomes))["latency_raw_ms"]]
            table.calibrate(raw, measured)
            table.calibration_genomes = [tuple(g) for g in genomes]
            cost.bind(table)
        off = _disagreement(cached, table) if reused and attempt == 0 else None
        if off is None or off <= tolerance:
            if off is not None:
                cache_note = f"reused (its calibration is {off:.1%} off the fresh one)"
            break
        # The cached entries were timed under other conditions: time everything again.
        cache_note = (f"rejected (its calibration was {off:.1%} off the fresh one, over "
                      f"cache_tolerance {tolerance:.0%}); re-timed")
        table.entries.clear()
        reused = 0
    table.timing = {
        "statistic": statistic,
        "calibration_rounds": rounds,
        "rounds_statistic": "min" if every_round else "median",
        "interleaved": bool(genomes) and timed > 0,
        "entries_timed": timed,
        "entries_from_cache": len(table) - timed,
        "cache": cache_note,
        "load_average_start": load_start,
        "load_average_end": _load_average(),
        "cpu_count": os.cpu_count(),
        "allocator": allocator,
        "started_at": _dt.datetime.fromtimestamp(started, _dt.UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.time() - started, 2),
        "runtime_settings": runtime_entry(hardware.runtime).settings(hardware.device,
                                                                     hardware.threads),
    }
    if timed or cache_note.startswith("rejected"):
        try:
            table.write_cache(cache_dir, replace=cache_note.startswith("rejected"))
        except OSError:
            pass  # a read-only home is no reason to fail a run
    return table


def cost_model(space: Any, batch_size: int, dtype: str) -> CostModel | PerGenomeCostModel:
    """The exact vectorised cost model of a genome space; the per-genome one (memoised, new
    shapes timed on first sight) for torchvision models and spaces that do not factorise."""
    from prunesearch.methods.families import family_entry

    spec_fn = GenomeSpecs(space, batch_size)
    if not family_entry(space.family).exact_cost:
        # Specs of torchvision models come from tracing a pruned copy (~1 s each): enumerating
        # every gene pair's combinations would take hours (ResNet-18 at granularity 64: 6 min).
        return PerGenomeCostModel(spec_fn=spec_fn, lower=space.lower(), upper=space.upper(),
                                  dtype=dtype)
    try:
        return CostModel(spec_fn=spec_fn, lower=space.lower(), upper=space.upper(), dtype=dtype)
    except NotFactorisable:
        return PerGenomeCostModel(spec_fn=spec_fn, lower=space.lower(), upper=space.upper(),
                                  dtype=dtype)


def end_to_end(module: nn.Module, input_shape: Sequence[int], hw: Any) -> dict[str, float]:
    """Time ``module`` end to end under ``hw`` (a ``hardware`` section).

    ``latency_ms_measured`` is ``hw.latency_statistic`` of the timed runs (the statistic the
    latency table predicts; docs/METHODS.md), ``latency_ms_median`` and ``latency_ms_p90``
    their median and 90th percentile, and ``peak_memory_mb`` the peak memory where the device
    reports it (CUDA)."""
    apply_allocator(hw)
    result = measure_latency(module, input_shape, device=hw.device, runtime=hw.runtime,
                             dtype=hw.dtype, batch_size=hw.batch_size, threads=hw.threads,
                             warmup=hw.warmup, repeats=hw.repeats,
                             measure_memory=torch.device(hw.device).type == "cuda")
    out = {"latency_ms_measured": statistic(result, _hw(hw, "latency_statistic", "median")),
           "latency_ms_median": result.median_ms, "latency_ms_p90": result.p90_ms}
    if result.peak_memory_mb is not None:
        out["peak_memory_mb"] = result.peak_memory_mb
    return out


def saved_or_built_table(saved: Path | None, *, cost: CostModel | PerGenomeCostModel,
                         hardware: Any, allow_timing: bool,
                         build: Callable[[], LatencyTable]) -> LatencyTable:
    """The run's saved table (so a resumed run predicts the same latencies), else a new one.

    A saved table that lacks shapes of the genome space is completed by timing them, but only
    where it was measured (same key) and timing is allowed; otherwise the run cannot go on with
    it. A new table (``build()``) is saved to ``saved``.

    Raises:
        RunStateError: the saved table lacks shapes that cannot be timed here.
    """
    apply_allocator(hardware)
    if saved is None or not saved.is_file():
        table = build()
        if saved is not None:
            table.save(saved)
        return table
    table = LatencyTable.load(saved, device=hardware.device if allow_timing else None)
    missing = table.missing(cost.specs)
    if missing:
        if not allow_timing or table.key != table_key(hardware):
            where = ("timing is not allowed here" if not allow_timing else
                     f"it was measured under {table.key.slug()}, not here")
            raise RunStateError(f"{saved} lacks {len(missing)} layer shapes of this genome "
                                f"space and {where}; rebuild it with 'prunesearch resume RUN_DIR "
                                "--retime-table'")
        table.measure_missing(cost.specs)
        table.save(saved)
    return table
