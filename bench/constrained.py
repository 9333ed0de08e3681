"""HAMP on pymoo's constrained test problems, with and without its feasibility classifier
(``HAMP(feasibility_threshold=...)``), against NSGA-II (population 40).

Median hypervolume over seeds after ``--evals`` evaluations, each run's front normalised by the
ideal and nadir of every front of that problem (reference 1.1 on every axis); printed as ratios
to NSGA-II's median. One run of the whole grid.

    .venv/bin/python bench/constrained.py [--problems osy tnk ...] [--seeds 8]
        [--thresholds 0 0.1 0.5] [--evals 400]
"""

from __future__ import annotations

import argparse

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.indicators.hv import HV
from pymoo.optimize import minimize
from pymoo.problems import get_problem

from prunesearch.search import HAMP

PROBLEMS = ("osy", "tnk", "bnh", "srn", "c2dtlz2", "ctp1", "welded_beam")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.0, 0.1, 0.5],
                        help="feasibility_threshold values; 0 = the classifier off")
    parser.add_argument("--evals", type=int, default=400)
    args = parser.parse_args()
    algorithms = {f"hamp t={t:g}": (lambda t=t: HAMP(feasibility_threshold=t or None))
                  for t in args.thresholds}
    algorithms["nsga2"] = lambda: NSGA2(pop_size=40)
    for name in args.problems:
        problem = get_problem(name)
        fronts = {}
        for seed in range(args.seeds):
            for label, make in algorithms.items():
                result = minimize(problem, make(), ("n_evals", args.evals), seed=seed)
                fronts[label, seed] = (result.F if result.F is not None
                                       else np.empty((0, problem.n_obj)))
        union = np.vstack([F for F in fronts.values() if len(F)])
        ideal, nadir = union.min(axis=0), union.max(axis=0)
        indicator = HV(ref_point=np.full(problem.n_obj, 1.1))
        scores: dict[str, list[float]] = {}
        for (label, _), F in fronts.items():
            value = indicator((F - ideal) / np.where(nadir > ideal, nadir - ideal, 1.0)) \
                if len(F) else 0.0
            scores.setdefault(label, []).append(float(value))
        medians = {label: float(np.median(v)) for label, v in scores.items()}
        ratios = ", ".join(f"{label} {medians[label] / medians['nsga2']:.3f}"
                           for label in algorithms if label != "nsga2")
        print(f"{name} ({problem.n_ieq_constr} constraints): HV / NSGA-II's: {ratios}",
              flush=True)


if __name__ == "__main__":
    main()
