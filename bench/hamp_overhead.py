"""Benchmark: the cost of one HAMP ask+tell with 2,000 archived solutions and 60 genes.

Target (issue 4): under 2 s with HAMP's defaults (random forest of 100 trees, at most 10 parents,
200 sampled moves per parent). A 60-gene pruning-like problem (block widths 1..16 granules,
error from a sensitivity-weighted width loss, latency and memory cheap) is driven by a hand-driven
ask/tell loop with HAMP() until the archive holds ``--archive`` solutions; the next ``--repeats``
generations are then timed (ask, tell, and the surrogate's fit + predict inside ask).

Usage::

    python bench/hamp_overhead.py                 # 2,000 archived, 60 genes, 3 timed rounds
    python bench/hamp_overhead.py --archive 500 --genes 30
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from prunesearch.search import HAMP, GenomeProblem  # noqa: E402


def make_problem(n_genes: int) -> GenomeProblem:
    """A ResNet-like problem with ``n_genes`` groups (fixed seeds, not tuned)."""
    rng = np.random.default_rng(7)
    sensitivity = rng.lognormal(-1.2, 0.8, n_genes) * 0.02
    lat = rng.uniform(0.5, 2.0, n_genes)
    mem = rng.uniform(0.2, 3.0, n_genes)

    def cheap(X: np.ndarray) -> np.ndarray:
        w = np.asarray(X, dtype=float) / 16.0
        return np.column_stack([(lat * np.ceil(X / 2.0) * 2.0 / 16.0).sum(1), (mem * w).sum(1)])

    def expensive(X: np.ndarray) -> np.ndarray:
        w = np.asarray(X, dtype=float) / 16.0
        return (0.07 + (sensitivity * (1 - w) ** 2).sum(1)
                + 0.5 * (np.maximum(0, 0.25 - w) ** 2).sum(1))[:, None]

    return GenomeProblem(np.ones(n_genes, dtype=int), np.full(n_genes, 16), n_obj=3,
                         cheap_objectives=(1, 2), cheap_fn=cheap, expensive_fn=expensive)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=int, default=2000, help="archived solutions first")
    parser.add_argument("--genes", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="timed ask+tell rounds")
    args = parser.parse_args(argv)
    problem = make_problem(args.genes)
    algorithm = HAMP()
    algorithm.setup(problem, termination=("n_evals", args.archive + 200 * args.repeats), seed=0)
    rounds = []
    fill_start = time.perf_counter()
    while algorithm.has_next() and len(rounds) < args.repeats:
        timed = algorithm.n_real_evals >= args.archive
        t0 = time.perf_counter()
        pop = algorithm.ask()
        t1 = time.perf_counter()
        pop.set("F", problem.evaluate(pop.get("X"), return_values_of=["F"]))
        t2 = time.perf_counter()
        algorithm.tell(infills=pop)
        t3 = time.perf_counter()
        if timed:
            log = algorithm.history_log[-1]
            rounds.append({"archive": algorithm.n_real_evals - len(pop), "batch": len(pop),
                           "ask": t1 - t0, "tell": t3 - t2, "surrogate": log["ls_fit_s"],
                           "candidates": log["ls_candidates"]})
    fill = time.perf_counter() - fill_start
    print(f"HAMP() defaults, {args.genes} genes, random forest "
          f"{algorithm.surrogate_options.get('n_trees', 100)} trees, "
          f"{algorithm.local_search.parents} parents x "
          f"{algorithm.local_search.samples_per_parent} moves")
    print(f"{'archive':>8}{'batch':>7}{'ranked':>8}{'ask s':>8}{'(fit+pred)':>11}{'tell s':>8}"
          f"{'ask+tell':>10}")
    for r in rounds:
        print(f"{r['archive']:>8}{r['batch']:>7}{r['candidates']:>8}{r['ask']:>8.2f}"
              f"{r['surrogate']:>11.2f}{r['tell']:>8.2f}{r['ask'] + r['tell']:>10.2f}")
    worst = max(r["ask"] + r["tell"] for r in rounds)
    print(f"worst ask+tell {worst:.2f} s (target < 2 s): {'OK' if worst < 2.0 else 'MISSED'}; "
          f"whole run {fill:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
