"""Benchmark: HAMP vs NSGA-II, Optuna's TPE, random search and HAMP's ablations on
pruning-like integer problems (``prunesearch.search.pruning_like``), at the budgets real
searches afford (160 and 400 evaluations).

Every algorithm runs with its registry defaults (``SearchSettings()``, i.e. ``HAMP()`` and the
configs' ``search:`` sections as they are). Seed k of a problem family runs on instance
``offset + k`` with search seed k, so every seed is a different network (sensitivities,
interactions, hardware tile) and the comparison is paired by seed. The default offset (100) is
the *reported* set; the tuning of HAMP's defaults used offset 0 (instances 0..9), disjoint.

One run per (algorithm, seed) to 400 evaluations; the 160-evaluation figures are its first 160
evaluations (no algorithm here reads the budget: the prefix is exactly the shorter run).

Reported per problem and budget: the median hypervolume (objectives divided by the problem's
``report_ref``: dense error + 0.10, dense latency and memory; reference 1.0) of every
algorithm, HAMP's median over the best peer's (NSGA-II, TPE, random: the highest median), and
Wilcoxon signed-rank p-values (paired by seed, two-sided) of HAMP against every other
algorithm, Holm-corrected within each problem and budget (the family: HAMP vs each other).

``nsga2-seeded`` and ``tpe-seeded`` start from HAMP's keep-ratio genomes (the full-width genome
and uniform keep ratios 0.9 .. 0.3, ``DEFAULT_KEEP_RATIOS``) in their first batch / first trials:
they separate what HAMP's search adds from what its seeding gives.

Usage::

    python bench/pruning_like.py                            # 10 seeds, every family
    python bench/pruning_like.py --seeds 5 --offset 0 --algorithms hamp hamp-no-ls nsga2
    python bench/pruning_like.py --hamp '{"pop_size": 30}'   # HAMP constructor overrides
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from pymoo.core.population import Population  # noqa: E402
from scipy.stats import wilcoxon  # noqa: E402

from prunesearch.search import LocalSearchSettings, SearchSettings, make_algorithm  # noqa: E402
from prunesearch.search.baselines import NSGA2Search  # noqa: E402
from prunesearch.search.hamp import DEFAULT_KEEP_RATIOS  # noqa: E402
from prunesearch.search.indicators import hypervolume, non_dominated  # noqa: E402
from prunesearch.search.pruning_like import PRUNING_LIKE, pruning_like_problem  # noqa: E402

BUDGETS = (160, 400)
PEERS = ("nsga2", "tpe", "random")
SEEDED_PEERS = ("nsga2-seeded", "tpe-seeded")
#: Algorithms by name: a registry method, or ``tpe``, or a HAMP variant with overrides.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "hamp": ("hamp", {}),
    "hamp-no-ls": ("hamp-no-ls", {}),
    "hamp-no-portfolio": ("hamp-no-portfolio", {}),
    "hamp-no-prescreen": ("hamp", {"local_search": {"offspring_pool": 1}}),
    "hamp-no-moves": ("hamp", {"local_search": {"max_moves": 0}}),
    "nsga2": ("nsga2", {}),
    "random": ("random", {}),
    "tpe": ("tpe", {}),
    "nsga2-seeded": ("nsga2-seeded", {}),
    "tpe-seeded": ("tpe-seeded", {}),
}
DEFAULT_ALGORITHMS = ("hamp", "hamp-no-ls", "hamp-no-portfolio", "nsga2", "tpe", "random")


def keep_ratio_genomes(problem) -> np.ndarray:
    """HAMP's initial seeds for a pruning genome: ``xl + r (xu - xl)`` for each keep ratio."""
    xl, xu = problem.xl.astype(float), problem.xu.astype(float)
    return np.unique(np.array([np.rint(xl + r * (xu - xl)) for r in DEFAULT_KEEP_RATIOS]),
                     axis=0).astype(int)


class SeededNSGA2(NSGA2Search):
    """pymoo NSGA-II whose first batch starts with HAMP's keep-ratio genomes."""

    def _initialize_infill(self) -> Population:
        pop = super()._initialize_infill()
        X = np.asarray(pop.get("X"), dtype=float).copy()
        seeds = keep_ratio_genomes(self.problem)[: len(X)]
        X[: len(seeds)] = seeds
        _, first = np.unique(X, axis=0, return_index=True)  # a random row may equal a seed
        return Population.new(X=X[np.sort(first)])


def run_tpe(problem, seed: int, budget: int, *, seeded: bool = False) -> np.ndarray:
    """Optuna's multi-objective TPE (multivariate), one integer parameter per gene."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multivariate=True is flagged experimental
        sampler = optuna.samplers.TPESampler(multivariate=True, seed=seed)
    study = optuna.create_study(directions=["minimize"] * problem.n_obj, sampler=sampler)
    if seeded:
        for x in keep_ratio_genomes(problem):
            study.enqueue_trial({f"g{i}": int(v) for i, v in enumerate(x)})
    xl, xu = problem.xl.astype(int), problem.xu.astype(int)
    F = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(budget):
            trial = study.ask()
            x = np.array([trial.suggest_int(f"g{i}", int(xl[i]), int(xu[i]))
                          for i in range(problem.n_var)])
            f = np.asarray(problem.evaluate(x[None, :], return_values_of=["F"]),
                           dtype=float)[0]
            study.tell(trial, [float(v) for v in f])
            F.append(f)
    return np.array(F)


def build(name: str, overrides: dict[str, Any]):
    """The pymoo algorithm of variant ``name`` (HAMP variants take ``overrides`` on top)."""
    method, extra = VARIANTS[name]
    kwargs = {**extra, **overrides} if method.startswith("hamp") else {}
    settings = SearchSettings()
    ls = dict(dataclasses.asdict(settings.local_search))
    ls.update(extra.get("local_search", {}))
    ls.update(overrides.get("local_search", {}))
    kwargs.pop("local_search", None)
    settings = dataclasses.replace(settings, local_search=LocalSearchSettings(**ls))
    return make_algorithm(method, settings, **kwargs)


def run_one(job: tuple[str, str, int, int, int, dict[str, Any]]) -> dict[str, Any]:
    """One search to ``budget`` evaluations; returns the objectives in evaluation order."""
    from pymoo.optimize import minimize

    family, name, seed, offset, budget, overrides = job
    problem = pruning_like_problem(family, offset + seed)
    start = time.perf_counter()
    if name in ("tpe", "tpe-seeded"):
        F = run_tpe(problem, seed, budget, seeded=name == "tpe-seeded")
    elif name == "nsga2-seeded":
        res = minimize(problem, SeededNSGA2(pop_size=SearchSettings().pop_size),
                       ("n_evals", budget), seed=seed)
        F = res.algorithm.archive_F
    else:
        res = minimize(problem, build(name, overrides), ("n_evals", budget), seed=seed)
        F = res.algorithm.archive_F
    return {"problem": family, "algorithm": name, "seed": seed, "F": F,
            "wall_s": time.perf_counter() - start}


def hv_at(F: np.ndarray, ref: np.ndarray, n: int) -> float:
    """Hypervolume of the first ``n`` evaluations, divided by ``ref`` (reference 1.0)."""
    G = F[:n] / ref
    return hypervolume(G[non_dominated(G)], np.ones(len(ref)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def analyse(results: list[dict[str, Any]], offset: int) -> dict[str, Any]:
    """HV per problem, budget, algorithm and seed; ratios; Holm-corrected Wilcoxon tests."""
    table: dict[str, dict[int, dict[str, dict[int, float]]]] = {}
    walls: dict[str, list[float]] = {}
    for r in results:
        ref = pruning_like_problem(r["problem"], offset + r["seed"]).report_ref
        for b in BUDGETS:
            table.setdefault(r["problem"], {}).setdefault(b, {}).setdefault(
                r["algorithm"], {})[r["seed"]] = hv_at(r["F"], ref, b)
        walls.setdefault(r["algorithm"], []).append(r["wall_s"])
    tests: list[tuple[str, int, str, float]] = []
    report: dict[str, Any] = {"problems": {}, "wall_s": {k: float(np.mean(v))
                                                          for k, v in walls.items()}}
    for problem, by_budget in table.items():
        for b, by_algo in by_budget.items():
            medians = {a: float(np.median(list(v.values()))) for a, v in by_algo.items()}
            entry: dict[str, Any] = {"median_hv": medians,
                                     "hv": {a: v for a, v in by_algo.items()}}
            peers = {a: m for a, m in medians.items() if a in PEERS}
            if "hamp" in medians and peers:
                best = max(peers, key=peers.get)
                entry["best_peer"] = best
                entry["ratio_best_peer"] = medians["hamp"] / peers[best] if peers[best] else None
                seeded = {a: m for a, m in medians.items() if a in SEEDED_PEERS}
                if seeded:
                    best_seeded = max(seeded, key=seeded.get)
                    entry["best_seeded_peer"] = best_seeded
                    entry["ratio_best_seeded_peer"] = (medians["hamp"] / seeded[best_seeded]
                                                       if seeded[best_seeded] else None)
                if medians.get("hamp-no-ls"):
                    entry["ratio_no_ls"] = medians["hamp"] / medians["hamp-no-ls"]
                for a, v in by_algo.items():
                    if a == "hamp":
                        continue
                    seeds = sorted(set(v) & set(by_algo["hamp"]))
                    h = np.array([by_algo["hamp"][s] for s in seeds])
                    o = np.array([v[s] for s in seeds])
                    p = 1.0 if np.allclose(h, o) else float(wilcoxon(h, o).pvalue)
                    tests.append((problem, b, a, p))
            report["problems"].setdefault(problem, {})[b] = entry
    # One Holm family per problem and budget: HAMP against each other algorithm.
    for problem, by_budget in table.items():
        for b in by_budget:
            family = [t for t in tests if t[0] == problem and t[1] == b]
            for (_, _, a, p), q in zip(family, holm([t[3] for t in family])):
                report["problems"][problem][b].setdefault("p_holm", {})[a] = q
                report["problems"][problem][b].setdefault("p_raw", {})[a] = p
    for b in BUDGETS:
        ratios = [e[b]["ratio_best_peer"] for e in report["problems"].values()
                  if e[b].get("ratio_best_peer") is not None]
        no_ls = [e[b]["ratio_no_ls"] for e in report["problems"].values()
                 if e[b].get("ratio_no_ls") is not None]
        report[f"median_ratio_best_peer_{b}"] = float(np.median(ratios)) if ratios else None
        report[f"median_ratio_no_ls_{b}"] = float(np.median(no_ls)) if no_ls else None
        seeded = [e[b]["ratio_best_seeded_peer"] for e in report["problems"].values()
                  if e[b].get("ratio_best_seeded_peer") is not None]
        report[f"median_ratio_best_seeded_peer_{b}"] = (float(np.median(seeded)) if seeded
                                                        else None)
    return report


def print_report(report: dict[str, Any], algorithms: Sequence[str], n_seeds: int) -> None:
    for b in BUDGETS:
        print(f"\nbudget {b}: median hypervolume over {n_seeds} seeds (instances differ by seed)")
        print(f"{'problem':<14}" + "".join(f"{a:>19}" for a in algorithms)
              + f"{'HAMP/best peer':>16}{'HAMP/no-ls':>12}")
        for problem, by_budget in report["problems"].items():
            e = by_budget[b]
            row = f"{problem:<14}" + "".join(
                f"{e['median_hv'].get(a, float('nan')):>19.4f}" for a in algorithms)
            r = e.get("ratio_best_peer")
            row += f"{r:>10.3f} ({e['best_peer'][:4]})" if r is not None else f"{'-':>16}"
            r = e.get("ratio_no_ls")
            row += f"{r:>12.3f}" if r is not None else f"{'-':>12}"
            r = e.get("ratio_best_seeded_peer")
            if r is not None:
                row += f"  vs best seeded peer {r:.3f} ({e['best_seeded_peer']})"
            print(row)
            if e.get("p_holm"):
                print(f"{'':<14}Holm p vs hamp: " + ", ".join(
                    f"{a} {q:.3f}" for a, q in e["p_holm"].items()))
        print(f"median over problems: HAMP/best peer "
              f"{report[f'median_ratio_best_peer_{b}'] or float('nan'):.3f}, HAMP/no-ls "
              f"{report[f'median_ratio_no_ls_{b}'] or float('nan'):.3f}, HAMP/best seeded peer "
              f"{report[f'median_ratio_best_seeded_peer_{b}'] or float('nan'):.3f}")
    print("\nmean wall seconds per run (400 evaluations): " + ", ".join(
        f"{a} {w:.1f}" for a, w in report["wall_s"].items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--offset", type=int, default=100,
                        help="first instance seed (100: reported set; 0: the tuning set)")
    parser.add_argument("--problems", nargs="+", default=list(PRUNING_LIKE),
                        choices=list(PRUNING_LIKE))
    parser.add_argument("--algorithms", nargs="+", default=list(DEFAULT_ALGORITHMS),
                        choices=list(VARIANTS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--hamp", default="{}", help="JSON HAMP overrides (HAMP variants)")
    parser.add_argument("--json", default=None, help="write the report (with all HVs) here")
    parser.add_argument("--runs", default=None,
                        help="JSON-lines file of finished runs: each run is appended as it "
                             "ends, runs already in it are not repeated (resume a long "
                             "benchmark; analyse a partial one with --seeds)")
    args = parser.parse_args(argv)
    overrides = json.loads(args.hamp)
    budget = max(BUDGETS)
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if args.runs and os.path.exists(args.runs):
        with open(args.runs) as fh:
            for line in fh:
                row = json.loads(line)
                if row["offset"] == args.offset and row["overrides"] == overrides:
                    row["F"] = np.asarray(row["F"], dtype=float)
                    done[(row["problem"], row["algorithm"], row["seed"])] = row
    # Seeds outermost: an interrupted benchmark has its first seeds complete for everyone.
    jobs = [(p, a, s, args.offset, budget, overrides)
            for s in range(args.seeds) for p in args.problems for a in args.algorithms
            if (p, a, s) not in done]
    start = time.perf_counter()
    results = [done[(p, a, s)] for s in range(args.seeds) for p in args.problems
               for a in args.algorithms if (p, a, s) in done]

    def keep(result: dict[str, Any]) -> None:
        results.append(result)
        if args.runs:
            with open(args.runs, "a") as fh:
                fh.write(json.dumps({**result, "F": np.asarray(result["F"]).tolist(),
                                     "offset": args.offset, "overrides": overrides}) + "\n")

    if args.jobs == 1:
        for j in jobs:
            keep(run_one(j))
    else:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for result in pool.imap_unordered(run_one, jobs, chunksize=1):
                keep(result)
    report = analyse(results, args.offset)
    print_report(report, args.algorithms, args.seeds)
    print(f"\n{len(jobs)} runs (+{len(done)} from --runs) in {time.perf_counter() - start:.0f} s with {args.jobs} "
          f"processes; instances {args.offset}..{args.offset + args.seeds - 1}; HAMP overrides: "
          f"{overrides or 'none (defaults)'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
