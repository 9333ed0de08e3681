"""A search under a device budget vs the same search without one, judged under the budget.

The synthetic ResNet-56-like pruning problem (``SyntheticPruningProblem``: latency and memory
exact and cheap, error expensive and noisy). For each budget (a fraction of the full-width
network's table latency) and method, the search runs ``--evals`` evaluations twice per seed:
without a budget, and with ``limits={latency: budget}`` (``search.max_latency_ms`` in a run:
genomes beyond it are shrunk to fit before they are evaluated). Both are scored only on what
they found within the budget:

* HV: hypervolume of the members within the budget, objectives divided by (error 0.30, the
  budget, the full-width memory), reference 1.0;
* best error: the lowest error found within the budget;
* share: evaluations spent within the budget (1.0 with the budget, by construction).

(The per-seed HV can be bimodal, a run finding or missing a good region: the mean is printed
beside the median.)

With the budget, each ``--repairs`` mode (``limit_repair``: ``spread``, ``boundary``) is run.
Printed per budget and method: medians over seeds and the median of the per-seed HV ratio
(limited / unlimited). No Ray, no torch.

Usage::

    .venv/bin/python bench/device_budget.py --budgets 0.3 0.5 --methods hamp nsga2 \\
        --seeds 10 --evals 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from pymoo.optimize import minimize

from prunesearch.search import SyntheticPruningProblem, make_algorithm
from prunesearch.search.indicators import hypervolume
from prunesearch.search.problems import synthetic_hv_ref
from prunesearch.search.settings import SearchSettings


def _within(F: np.ndarray, limit: float, ref: np.ndarray) -> tuple[float, float, float]:
    inside = F[F[:, 1] <= limit]
    share = len(inside) / max(1, len(F))
    if not len(inside):
        return 0.0, float("nan"), share
    box = np.array([ref[0], limit, ref[2]])
    return float(hypervolume(inside / box, np.ones(3))), float(inside[:, 0].min()), share


def run(budgets: list[float], methods: list[str], seeds: int, evals: int,
        pop_size: int, repairs: list[str], first_seed: int = 0) -> list[dict]:
    ref = synthetic_hv_ref()
    rows = []
    for fraction in budgets:
        limit = fraction * float(ref[1])
        for method in methods:
            variants = [("unlimited", None, "spread")] + [
                (f"limited_{r}", {1: limit}, r) for r in repairs]
            per_seed: dict[str, list] = {name: [] for name, _, _ in variants}
            started = time.perf_counter()
            for seed in range(first_seed, first_seed + seeds):
                for name, limits, repair in variants:
                    problem = SyntheticPruningProblem(limits=limits, limit_repair=repair)
                    result = minimize(problem, make_algorithm(method, SearchSettings(
                        pop_size=pop_size)), ("n_evals", evals), seed=seed)
                    algorithm = result.algorithm
                    F = algorithm.archive_F[algorithm.archive_feasible]
                    per_seed[name].append(_within(F, limit, ref))
            hv = {k: [v[0] for v in vals] for k, vals in per_seed.items()}
            row = {"budget_fraction": fraction, "method": method, "seeds": seeds,
                   "first_seed": first_seed, "evals": evals,
                   "wall_s": round(time.perf_counter() - started, 1)}
            for name, vals in per_seed.items():
                row[f"{name}_hv"] = statistics.median(v[0] for v in vals)
                row[f"{name}_hv_mean"] = statistics.fmean(v[0] for v in vals)
                errors = [v[1] for v in vals if np.isfinite(v[1])]
                row[f"{name}_best_error"] = statistics.median(errors) if errors else None
                row[f"{name}_share_within"] = statistics.median(v[2] for v in vals)
            text = []
            for name, _, _ in variants[1:]:
                ratios = [lim / unl if unl > 0 else float("inf")
                          for lim, unl in zip(hv[name], hv["unlimited"], strict=True)]
                row[f"{name}_hv_ratio_median"] = statistics.median(ratios)
                row[f"{name}_hv_ratio_min"] = min(ratios)
                text.append(f"{name} {row[name + '_hv']:.4f}, mean {row[name + '_hv_mean']:.4f} "
                            f"(ratio median "
                            f"{statistics.median(ratios):.2f}, min {min(ratios):.2f}; best "
                            f"error {row[name + '_best_error']:.4f})")
            rows.append(row)
            best = row["unlimited_best_error"]
            print(f"budget {fraction:.0%} of full latency, {method}: HV within budget: unlimited "
                  f"{row['unlimited_hv']:.4f}, mean {row['unlimited_hv_mean']:.4f} (best error "
                  f"{'-' if best is None else f'{best:.4f}'}; "
                  f"{row['unlimited_share_within']:.0%} of evaluations within); "
                  + "; ".join(text) + f" ({row['wall_s']} s)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.3, 0.5],
                        help="latency budgets as fractions of the full-width latency")
    parser.add_argument("--methods", nargs="+", default=["hamp", "nsga2"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--evals", type=int, default=300)
    parser.add_argument("--pop-size", type=int, default=20)
    parser.add_argument("--repairs", nargs="+", default=["spread", "boundary"],
                        choices=["spread", "boundary"], help="limit_repair modes compared")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if any(not 0 < b <= 1 for b in args.budgets):
        parser.error("--budgets must be fractions in (0, 1]")
    if args.seeds < 1 or args.evals < 1 or args.pop_size < 4:
        parser.error("--seeds and --evals must be >= 1, --pop-size >= 4")
    rows = run(args.budgets, args.methods, args.seeds, args.evals, args.pop_size, args.repairs,
               args.first_seed)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
