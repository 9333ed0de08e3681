"""Latency table vs end-to-end timings, idle and with a competing CPU load (issue 16, item 3).

For each ``--statistic`` the latency table of a config is built exactly as a search builds it
(:class:`~prunesearch.methods.evaluator.PruningTask`, an empty latency cache, entries and
calibration networks interleaved), then ``--holdout`` seeded random genomes that the
calibration never saw (another seed, dense genome left out) are timed end to end in the same
process (``task.measure`` in ``hardware.calibration_rounds`` passes combined by
``hardware.rounds_statistic``, as the driver re-times a local run's front; before session 11,
one pass). Printed per statistic:
median and max relative error of the table against the measured figure of the same statistic
(``latency_ms_measured``) and against the median of the same runs, and the build time.

``--load`` starts a busy-loop Python process (one core) before the table is built and stops it
after the last timing: table, calibration and re-timing all run beside it.

Usage (under the shared lock; report ``uptime`` before and after)::

    flock /tmp/cpu.lock .venv/bin/python bench/latency_load.py configs/quickstart.yaml \\
        --statistic median p25 min --holdout 12 [--load] [--set hardware.runtime=onnxruntime]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def _busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--statistic", nargs="+", default=["median", "p25"])
    parser.add_argument("--holdout", type=int, default=12)
    parser.add_argument("--load", action="store_true", help="a busy-loop process on one core")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from prunesearch.cluster.config import load_config
    from prunesearch.methods.cost.calibration import calibration_genomes
    from prunesearch.methods.evaluator import PruningTask
    from prunesearch.methods.rounds import combine_rounds

    print(f"load average at start: {os.getloadavg()}; competing busy loop: {args.load}")
    rows = []
    for stat in args.statistic:
        config = load_config(args.config, [*args.overrides, f"hardware.latency_statistic={stat}"])
        hog = _busy_loop() if args.load else None
        try:
            time.sleep(0.5 if hog else 0.0)
            with tempfile.TemporaryDirectory() as cache:
                start = time.perf_counter()
                task = PruningTask(config, run_dir=None, cache_dir=cache)
                build_s = time.perf_counter() - start
            genomes = calibration_genomes(task.lower, task.upper, args.holdout, seed=987654)[1:]
            predicted = task.evaluate_cheap(np.asarray(genomes))[:, 0]
            # As the driver re-times a front: hardware.calibration_rounds passes over all of
            # them (alternating direction), each figure the rounds_statistic of its passes.
            passes = max(1, int(config.hardware.calibration_rounds))
            by_pass: list[list[dict]] = [[{} for _ in genomes] for _ in range(passes)]
            for p in range(passes):
                order = range(len(genomes)) if p % 2 == 0 else reversed(range(len(genomes)))
                for i in order:
                    by_pass[p][i] = task.measure(genomes[i])
            how = config.hardware.rounds_statistic
            timed = [{k: combine_rounds([by_pass[p][i][k] for p in range(passes)], how)
                      for k in ("latency_ms_measured", "latency_ms_median")}
                     for i in range(len(genomes))]
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
        measured = np.array([t["latency_ms_measured"] for t in timed])
        median = np.array([t["latency_ms_median"] for t in timed])
        err = np.abs(predicted - measured) / measured
        err_med = np.abs(predicted - median) / median
        row = {"statistic": stat, "rounds_statistic": config.hardware.rounds_statistic,
               "runtime": config.hardware.runtime,
               "batch": config.hardware.batch_size, "entries": len(task.table),
               "build_s": round(build_s, 1), "holdout": len(genomes),
               "error_median": float(np.median(err)), "error_max": float(np.max(err)),
               "error_vs_median_median": float(np.median(err_med)),
               "error_vs_median_max": float(np.max(err_med)),
               "measured_span": float(measured.max() / measured.min()),
               "timing": task.table.timing}
        rows.append(row)
        print(f"{stat:>6} rounds {row['rounds_statistic']} | {row['runtime']} b{row['batch']} | "
              f"{row['entries']} entries, build {row['build_s']} s | table vs measured "
              f"({stat}): median {row['error_median']:.1%}, max {row['error_max']:.1%} | vs median of runs: "
              f"median {row['error_vs_median_median']:.1%}, max {row['error_vs_median_max']:.1%}"
              f" | measured span {row['measured_span']:.2f}x", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
