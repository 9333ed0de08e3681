"""Benchmark: HAMP vs its ablations, NSGA-II and random search at equal evaluation budgets.

Runs every algorithm of ``prunesearch.search.ALGORITHMS`` (with its registry defaults, i.e.
``HAMP()`` as it is) on the synthetic pruning problem and on ZDT1-3 / DTLZ2, real-valued and
discretised, for several seeds, and prints per problem:

* the median hypervolume of every algorithm (the synthetic problem uses its ``hv_ref``; the others
  normalise by the ideal/nadir of all final fronts of that problem, all algorithms and seeds,
  reference 1.1: ``comparison_normalizer``),
* HAMP / NSGA-II median ratio and the Wilcoxon rank-sum p-value (scipy's Mann-Whitney U, exact),
* the evaluations HAMP needs (median curve over seeds) to reach NSGA-II's final median
  hypervolume, as a fraction of the budget.

Usage::

    python bench/moo_suite.py                       # 5 seeds, 400 evaluations, all problems
    python bench/moo_suite.py --quick               # 3 seeds, synthetic + zdt1, for a smoke run
    python bench/moo_suite.py --problems synthetic zdt2 --seeds 7 --jobs 2
    python bench/moo_suite.py --hamp '{"pop_size": 30}'   # try other HAMP settings
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from typing import Any

# One BLAS thread per worker process: the suite parallelises over runs (--jobs).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy.stats import mannwhitneyu  # noqa: E402

from prunesearch.search import (  # noqa: E402
    ALGORITHMS,
    BENCHMARK_PROBLEMS,
    LocalSearchSettings,
    SearchSettings,
    benchmark_problem,
    make_algorithm,
)
from prunesearch.search.indicators import (  # noqa: E402
    comparison_normalizer,
    hypervolume,
    non_dominated,
)

CHECKPOINT_EVERY = 10


def run_one(job: tuple[str, str, int, int, dict[str, Any]]) -> dict[str, Any]:
    """One search; returns the archive (objectives in evaluation order) and its wall time."""
    from pymoo.optimize import minimize

    problem_name, method, seed, budget, overrides = job
    problem = benchmark_problem(problem_name)
    overrides = dict(overrides)
    settings = SearchSettings()
    if "local_search" in overrides:
        # Through the settings, so that hamp-no-ls still switches the local search off.
        ls = LocalSearchSettings(**overrides.pop("local_search"))
        settings = dataclasses.replace(settings, local_search=ls)
    algorithm = make_algorithm(method, settings,
                               **(overrides if method.startswith("hamp") else {}))
    start = time.perf_counter()
    res = minimize(problem, algorithm, ("n_evals", budget), seed=seed)
    wall = time.perf_counter() - start
    algo = res.algorithm
    operators = [h["operator"] for h in algo.history_log]
    return {"problem": problem_name, "method": method, "seed": seed, "wall_s": wall,
            "F": algo.archive_F, "feasible": algo.archive_feasible,
            "operators": operators}


def _front(F: np.ndarray) -> np.ndarray:
    return F[non_dominated(F)] if len(F) else F


def hv_curve(F: np.ndarray, feasible: np.ndarray, shift: np.ndarray, scale: np.ndarray,
             ref: np.ndarray, budget: int) -> np.ndarray:
    """Hypervolume of the archive's front after every CHECKPOINT_EVERY evaluations."""
    points = list(range(CHECKPOINT_EVERY, budget + 1, CHECKPOINT_EVERY))
    if not points or points[-1] != budget:
        points.append(budget)
    out = []
    for n in points:
        G = F[:n][feasible[:n]]
        G = (G - shift) / scale
        out.append(hypervolume(_front(G), ref) if len(G) else 0.0)
    return np.array(out)


def analyse(results: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """Hypervolume statistics per problem and algorithm."""
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_problem.setdefault(r["problem"], []).append(r)
    report = {}
    for name, runs in by_problem.items():
        problem = benchmark_problem(name)
        shift, scale, ref = comparison_normalizer(
            [_front(r["F"][r["feasible"]]) for r in runs], ref=getattr(problem, "hv_ref", None))
        curves: dict[str, list[np.ndarray]] = {}
        walls: dict[str, list[float]] = {}
        ops: dict[str, dict[str, int]] = {}
        for r in runs:
            curves.setdefault(r["method"], []).append(
                hv_curve(r["F"], r["feasible"], shift, scale, ref, budget))
            walls.setdefault(r["method"], []).append(r["wall_s"])
            for op in r["operators"]:
                ops.setdefault(r["method"], {}).setdefault(op, 0)
                ops[r["method"]][op] += 1
        final = {m: np.array([c[-1] for c in cs]) for m, cs in curves.items()}
        entry: dict[str, Any] = {
            "median_hv": {m: float(np.median(v)) for m, v in final.items()},
            "final_hv": {m: v.tolist() for m, v in final.items()},
            "wall_s": {m: float(np.mean(v)) for m, v in walls.items()},
            "operators": ops.get("hamp", {}),
        }
        if "hamp" in final and "nsga2" in final:
            h, n = final["hamp"], final["nsga2"]
            entry["ratio_hamp_nsga2"] = float(np.median(h) / np.median(n)) if np.median(n) else None
            entry["p_hamp_vs_nsga2"] = float(mannwhitneyu(h, n, alternative="two-sided",
                                                           method="exact").pvalue)
            target = np.median(n)
            median_curve = np.median(np.vstack(curves["hamp"]), axis=0)
            reached = np.flatnonzero(median_curve >= target)
            entry["evals_to_nsga2_hv"] = (
                int(min((reached[0] + 1) * CHECKPOINT_EVERY, budget)) if len(reached) else None)
        report[name] = entry
    return report


def print_report(report: dict[str, Any], methods: Sequence[str], budget: int,
                 n_seeds: int) -> None:
    print(f"\nmedian hypervolume over {n_seeds} seeds, budget {budget} evaluations")
    header = f"{'problem':<11}" + "".join(f"{m:>19}" for m in methods)
    header += f"{'HAMP/NSGA2':>12}{'p':>8}{'evals->NSGA2':>14}"
    print(header)
    for name, e in report.items():
        row = f"{name:<11}" + "".join(f"{e['median_hv'].get(m, float('nan')):>19.4f}"
                                      for m in methods)
        ratio = e.get("ratio_hamp_nsga2")
        p = e.get("p_hamp_vs_nsga2")
        reach = e.get("evals_to_nsga2_hv")
        row += f"{ratio:>12.3f}" if ratio is not None else f"{'-':>12}"
        row += f"{p:>8.3f}" if p is not None else f"{'-':>8}"
        row += (f"{reach:>7d} ({reach / budget:4.0%})" if reach is not None
                else f"{'never':>14}")
        print(row)
    print("\nmean wall seconds per run")
    for name, e in report.items():
        print(f"{name:<11}" + "".join(f"{e['wall_s'].get(m, float('nan')):>19.2f}"
                                      for m in methods))
    print("\nHAMP selection operators used (generations, all seeds)")
    for name, e in report.items():
        print(f"{name:<11}", json.dumps(e["operators"]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="independent runs per algorithm")
    parser.add_argument("--budget", type=int, default=400, help="real evaluations per run")
    parser.add_argument("--problems", nargs="+", default=list(BENCHMARK_PROBLEMS),
                        choices=BENCHMARK_PROBLEMS)
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--quick", action="store_true",
                        help="3 seeds on synthetic and zdt1 (a smoke run, not a result)")
    parser.add_argument("--hamp", default="{}",
                        help="JSON dict of HAMP constructor overrides (hamp and its ablations)")
    parser.add_argument("--json", default=None, help="write the full report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.problems = 3, ["synthetic", "zdt1"]
    if args.seeds < 1 or args.budget < 1 or args.jobs < 1:
        parser.error("--seeds, --budget and --jobs must be >= 1")
    overrides = json.loads(args.hamp)
    jobs = [(p, m, 1000 + s, args.budget, overrides)
            for p in args.problems for s in range(args.seeds) for m in args.algorithms]
    start = time.perf_counter()
    if args.jobs == 1:
        results = [run_one(j) for j in jobs]
    else:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(run_one, jobs, chunksize=1)
    report = analyse(results, args.budget)
    print_report(report, args.algorithms, args.budget, args.seeds)
    print(f"\n{len(jobs)} runs in {time.perf_counter() - start:.0f} s with {args.jobs} processes; "
          f"HAMP overrides: {overrides or 'none (defaults)'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
