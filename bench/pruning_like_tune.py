"""Tuning helper for HAMP's defaults on the *tuning* instances of the pruning-like problems.

Runs HAMP with each JSON override set given (and NSGA-II at the same population as a yardstick)
on instances ``offset .. offset + seeds - 1`` (default offset 0: disjoint from the reported
instances 100.. of ``bench/pruning_like.py``) and prints, per budget, the median over problems
of each setting's median hypervolume relative to NSGA-II's.

Usage::

    python bench/pruning_like_tune.py '{}' '{"local_search": {"offspring_pool": 1}}'
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import numpy as np
from pruning_like import BUDGETS, hv_at, run_one

from prunesearch.search.pruning_like import PRUNING_LIKE, pruning_like_problem


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="+", help="JSON HAMP override sets")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--problems", nargs="+", default=list(PRUNING_LIKE))
    parser.add_argument("--peer", default="nsga2", help="yardstick algorithm")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    sets = [json.loads(s) for s in args.settings]
    jobs = [(p, "hamp", s, args.offset, max(BUDGETS), o)
            for p in args.problems for s in range(args.seeds) for o in sets]
    pop = sets[0].get("pop_size")
    jobs += [(p, args.peer, s, args.offset, max(BUDGETS), {})
             for p in args.problems for s in range(args.seeds)]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        results = pool.map(run_one, jobs, chunksize=1)
    n_hamp = len(args.problems) * args.seeds * len(sets)
    hv: dict[tuple[int, str, int], dict[int, float]] = {}
    for job, r in zip(jobs, results):
        key = sets.index(job[5]) if job[1] == "hamp" else -1
        ref = pruning_like_problem(r["problem"], args.offset + r["seed"]).report_ref
        for b in BUDGETS:
            hv.setdefault((b, r["problem"], key), {})[r["seed"]] = hv_at(r["F"], ref, b)
    for b in BUDGETS:
        print(f"budget {b} (peer {args.peer}, pop {pop}; ratio of medians per problem)")
        for k, o in enumerate(sets):
            ratios = []
            for p in args.problems:
                h = np.median(list(hv[(b, p, k)].values()))
                n = np.median(list(hv[(b, p, -1)].values()))
                ratios.append(h / n if n > 0 else float("inf"))
            print(f"  {json.dumps(o):<90} median {np.median(ratios):.3f}  "
                  + " ".join(f"{r:.3f}" for r in ratios))
    print(f"{len(jobs)} runs ({n_hamp} HAMP) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
