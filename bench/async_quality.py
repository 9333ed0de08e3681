"""Search quality of the asynchronous mode (issue 13): HAMP async vs HAMP generational vs NSGA-II.

A discrete-event simulation of the driver on the synthetic ResNet-56-like pruning problem (the
same pymoo problem the driver builds: no ``hv_ref`` inside the search), with simulated
evaluation times: seeded per candidate, ``--sleep`` seconds +- ``--jitter`` (``--duration
macs``: also proportional to the candidate's MACs), as the synthetic evaluator sleeps them. No
Ray: ``slots`` simulated evaluators. The driver's own compute is charged in simulated time as
measured (``perf_counter`` around every ask and tell), so both modes pay their real asks and
tells:

* generational: ask a batch (``pop_size`` = slots), dispatch it in ask order to the first free
  slot, wait for the last result, tell the batch; asks and tells run while every slot is idle.
* async: exactly the driver's async loop (:class:`~prunesearch.search.steady_state.SteadyState`,
  a queue of ``slots + queue_extra`` asked candidates, longest expected MACs dispatched first, a
  dispatch thread that never waits for the main thread): the main thread tells every result
  that arrived while it was busy as one group, then refills the queue.

Reported per method and slot count, over ``--seeds`` seeds: the median hypervolume (objectives
divided by the synthetic problem's reference point: error 0.30, the full-width genome's latency
and memory; reference 1.0) of the front of every evaluation finished

* at equal evaluations: the first ``--evals-per-slot x slots`` to finish, and
* at equal wall-clock: by the simulated time generational HAMP needed for those evaluations
  (per seed).

Usage::

    .venv/bin/python bench/async_quality.py --slots 16 64 --seeds 5 --evals-per-slot 10
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from pymoo.core.population import Population
from pymoo.termination.max_eval import MaximumFunctionCallTermination

from prunesearch.search.indicators import hypervolume, non_dominated
from prunesearch.search.problems import GenomeProblem
from prunesearch.search.registry import make_algorithm
from prunesearch.search.settings import SearchSettings
from prunesearch.search.steady_state import SteadyState, default_ask_size
from prunesearch.search.synthetic import (
    LOWER,
    UPPER,
    synthetic_cheap,
    synthetic_error,
    synthetic_hv_ref,
)

#: SteadyState options the flags set (None: SteadyState's default, the driver's).
STEADY_OPTIONS = ("believer", "initial_tell", "lean_initial", "pooled_credits", "aligned_credits",
                  "queue_margin", "seeded_fillers", "bred_fillers", "cut_every", "surrogate_caps",
                  "adaptive_margin")
DENSE_MACS = float(np.sum(UPPER.astype(float) ** 2))


def _priority(ind: Any, batch: int, order: str = "fifo") -> tuple[int, float]:
    """The driver's feed order: ask groups first come first served (``lifo``: the newest ask
    first), longest MACs first within."""
    return (batch if order == "fifo" else -batch), -float(np.sum(np.asarray(ind.X, dtype=float) ** 2))


def _problem() -> GenomeProblem:
    def errors(X: np.ndarray) -> np.ndarray:
        return np.array([[synthetic_error([int(v) for v in x])] for x in X])

    return GenomeProblem(LOWER, UPPER, n_obj=3, cheap_objectives=(1, 2), cheap_fn=synthetic_cheap,
                         expensive_fn=errors)


def _duration(genome: np.ndarray, cid: int, seed: int, args: argparse.Namespace) -> float:
    rng = np.random.default_rng([seed, cid])  # as methods/synthetic.py's evaluator
    scale = float(np.sum(genome.astype(float) ** 2)) / DENSE_MACS if args.duration == "macs" else 1.0
    return args.sleep * scale * (1.0 + args.jitter * rng.uniform(-1.0, 1.0))


def _evaluate(problem: GenomeProblem, pop: Population) -> Population:
    X = np.asarray(pop.get("X"), dtype=float)
    F = np.asarray(problem.evaluate(X, return_as_dictionary=True)["F"], dtype=float)
    empty = np.zeros((len(pop), 0))
    pop.set("F", F, "G", empty, "H", empty)  # as the driver tells (batch_plan.set_objectives)
    for ind in pop:
        ind.CV = np.array([0.0])
        ind.evaluated.update({"F", "G", "H"})
    return pop


def _algorithm(method: str, slots: int, budget: int, seed: int, problem: GenomeProblem) -> Any:
    settings = SearchSettings(pop_size=max(4, slots), budget=budget)
    algorithm = make_algorithm(method, settings)
    algorithm.setup(problem, termination=MaximumFunctionCallTermination(budget), seed=seed,
                    verbose=False)
    return algorithm


def run_generational(method: str, slots: int, budget: int, seed: int,
                     args: argparse.Namespace) -> list[tuple[float, np.ndarray]]:
    """(finish time, objectives) of every evaluation, in finish order."""
    problem = _problem()
    algorithm = _algorithm(method, slots, budget, seed, problem)
    clock, next_id, done = 0.0, 0, []
    while algorithm.has_next() and next_id < budget:
        t0 = time.perf_counter()
        pop = algorithm.ask()
        clock += time.perf_counter() - t0
        if pop is None or len(pop) == 0:
            break
        pop = pop[: budget - next_id]
        _evaluate(problem, pop)
        free = [clock] * slots
        heapq.heapify(free)
        for ind in pop:
            start = heapq.heappop(free)
            end = start + _duration(np.asarray(ind.X), next_id, seed, args)
            next_id += 1
            heapq.heappush(free, end)
            done.append((end, np.asarray(ind.F, dtype=float)))
        clock = max(free)  # the barrier
        t0 = time.perf_counter()
        algorithm.tell(infills=pop)
        clock += time.perf_counter() - t0
    return sorted(done, key=lambda item: item[0])


def run_async(method: str, slots: int, budget: int, seed: int, args: argparse.Namespace,
              horizon: float) -> list[tuple[float, np.ndarray]]:
    """The async loop, simulated until ``budget`` evaluations and ``horizon`` seconds."""
    problem = _problem()
    total = 4 * budget  # room to run on until the horizon
    algorithm = _algorithm(method, slots, total, seed, problem)
    options = {name: getattr(args, name) for name in STEADY_OPTIONS
               if getattr(args, name) is not None}
    steady = SteadyState(algorithm, ask_size=args.ask_size or default_ask_size(slots), **options)
    outstanding: dict[int, Any] = {}
    seen: set[tuple[int, ...]] = set()
    feed: list[tuple[int, float, int]] = []  # (ask group, -MACs, id)
    running: list[tuple[float, int]] = []  # (finish time, id)
    free_slots = slots
    next_id, told, clock = 0, 0, 0.0
    done: list[tuple[float, np.ndarray]] = []
    objectives: dict[int, np.ndarray] = {}

    batches = 0

    def refill() -> float:
        nonlocal next_id, batches
        spent = 0.0
        while len(outstanding) < slots + steady.queue_extra and told + len(outstanding) < total:
            t0 = time.perf_counter()
            pop = steady.ask(total - told - len(outstanding), exclude=seen)
            spent += time.perf_counter() - t0
            if len(pop) == 0:
                break
            batches += 1
            _evaluate(problem, pop)
            for ind in pop:
                key = tuple(int(v) for v in ind.X)
                seen.add(key)
                outstanding[next_id] = ind
                objectives[next_id] = np.asarray(ind.F, dtype=float)
                heapq.heappush(feed, (*_priority(ind, batches, args.feed_order), next_id))
                next_id += 1
        return spent

    def dispatch(now: float) -> None:
        nonlocal free_slots
        while free_slots and feed:
            cid = heapq.heappop(feed)[-1]
            x = np.asarray(outstanding[cid].X)
            heapq.heappush(running, (now + _duration(x, cid, seed, args), cid))
            free_slots -= 1

    clock += refill()
    dispatch(0.0)  # the first dispatch waits for the initial asks (as in the driver)
    while running and (told < budget or clock < horizon):
        # The main thread is free at `clock`: everything finished by then is one group (at
        # least the next result; the dispatch thread re-filled the slots meanwhile).
        group: list[int] = []
        first = running[0][0]
        clock = max(clock, first)
        while running and running[0][0] <= clock:
            end, cid = heapq.heappop(running)
            free_slots += 1
            dispatch(end)
            group.append(cid)
            done.append((end, objectives[cid]))
        t0 = time.perf_counter()
        steady.tell(Population.create(*[outstanding.pop(cid) for cid in group]))
        told += len(group)
        spent = time.perf_counter() - t0
        spent += refill()
        # Candidates asked now reach idle slots at once (the dispatch thread waits for them).
        dispatch(clock + spent)
        clock += spent
    return sorted(done, key=lambda item: item[0])


def _hv(F: list[np.ndarray]) -> float:
    if not F:
        return 0.0
    Fn = np.asarray(F) / synthetic_hv_ref()
    return float(hypervolume(Fn[non_dominated(Fn)], np.ones(3)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evals-per-slot", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--jitter", type=float, default=0.5)
    parser.add_argument("--duration", default="fixed", choices=["fixed", "macs"])
    parser.add_argument("--ask-size", type=int, default=None,
                        help="async offspring per ask (default: default_ask_size(slots))")
    parser.add_argument("--believer", action=argparse.BooleanOptionalAction, default=None,
                        help="async: rank asks with in-flight candidates believed at their "
                             "predicted objectives")
    parser.add_argument("--initial-tell", type=int, default=None,
                        help="async: tell the held initial results once this many arrived")
    parser.add_argument("--lean-initial", action=argparse.BooleanOptionalAction, default=None,
                        help="async: one filler genome per ask and no queue beyond the slots "
                             "until the initial population is told")
    parser.add_argument("--pooled-credits", action=argparse.BooleanOptionalAction, default=None,
                        help="async: HAMP's per-batch pre-screen/surrogate records pool told "
                             "groups until one ask's worth")
    parser.add_argument("--aligned-credits", action=argparse.BooleanOptionalAction, default=None,
                        help="async: HAMP's records and portfolio credit go to the ask that "
                             "bred the told candidates")
    parser.add_argument("--queue-margin", type=int, default=None,
                        help="async: ask again once the queue beyond the slots is below this "
                             "(default: the ask size)")
    parser.add_argument("--seeded-fillers", action=argparse.BooleanOptionalAction, default=None,
                        help="async: seeded uniform genomes (then random ones) fill evaluators "
                             "while the initial population is incomplete")
    parser.add_argument("--bred-fillers", action=argparse.BooleanOptionalAction, default=None,
                        help="async: neighbour moves of the held results' front fill "
                             "evaluators while the initial population is incomplete")
    parser.add_argument("--cut-every", type=int, default=None,
                        help="async HAMP: one selection cut (and portfolio draw) per this many "
                             "told results")
    parser.add_argument("--adaptive-margin", action=argparse.BooleanOptionalAction,
                        default=None, help="SteadyState(adaptive_margin=...)")
    parser.add_argument("--surrogate-caps", action=argparse.BooleanOptionalAction, default=None,
                        help="async HAMP: fit the forest on the most recent 1,024 evaluations, "
                             "512 draws per tree")
    parser.add_argument("--skip-generational-nsga2", action="store_true",
                        help="only the two HAMP searches (faster experiments)")
    parser.add_argument("--feed-order", default="fifo", choices=["fifo", "lifo"],
                        help="queued ask groups dispatched oldest first (the driver) or newest")
    parser.add_argument("--curve", action="store_true",
                        help="also print the median HV at 20/40/60/80/100%% of the budget")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if min(args.slots) < 1 or args.seeds < 1 or args.evals_per_slot < 1:
        parser.error("--slots, --seeds and --evals-per-slot must be >= 1")
    print(f"load average before: {os.getloadavg()}")
    rows: list[dict[str, Any]] = []
    for slots in args.slots:
        budget = args.evals_per_slot * slots
        runs: dict[str, list[list[tuple[float, np.ndarray]]]] = {}
        started = time.perf_counter()
        runs["hamp generational"] = [run_generational("hamp", slots, budget, s, args)
                                     for s in range(args.seeds)]
        horizons = [run[budget - 1][0] for run in runs["hamp generational"]]
        methods = ("hamp",) if args.skip_generational_nsga2 else ("hamp", "nsga2")
        if "nsga2" in methods:
            runs["nsga2 generational"] = [run_generational("nsga2", slots, budget, s, args)
                                          for s in range(args.seeds)]
        for method in methods:
            runs[f"{method} async"] = [run_async(method, slots, budget, s, args, horizons[s])
                                       for s in range(args.seeds)]
        for name, per_seed in runs.items():
            at_evals = [_hv([f for _, f in run[:budget]]) for run in per_seed]
            at_time = [_hv([f for t, f in run if t <= horizons[s]])
                       for s, run in enumerate(per_seed)]
            evals_by_time = [sum(1 for t, _ in run if t <= horizons[s])
                             for s, run in enumerate(per_seed)]
            time_for_budget = [run[budget - 1][0] for run in per_seed]
            marks = [budget * i // 5 for i in range(1, 6)]
            curve = [statistics.median(_hv([f for _, f in run[:m]]) for run in per_seed)
                     for m in marks]
            rows.append({
                "slots": slots, "method": name, "budget": budget, "curve_evals": marks,
                "hv_curve": curve,
                "hv_equal_evals": statistics.median(at_evals),
                "hv_equal_time": statistics.median(at_time),
                "evals_by_time": statistics.median(evals_by_time),
                "time_for_budget_s": statistics.median(time_for_budget),
                "hv_equal_evals_all": at_evals, "hv_equal_time_all": at_time,
            })
        print(f"slots {slots}: simulated in {time.perf_counter() - started:.0f} s")
    print(f"load average after: {os.getloadavg()}")
    print("\n| slots | search | median HV at equal evaluations | median HV at equal wall-clock "
          "| evaluations by then | simulated time for the budget (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['slots']} | {r['method']} | {r['hv_equal_evals']:.4f} | "
              f"{r['hv_equal_time']:.4f} | {r['evals_by_time']:.0f} | "
              f"{r['time_for_budget_s']:.1f} |")
    for slots in args.slots:
        by = {r["method"]: r for r in rows if r["slots"] == slots}
        ga, aa = by["hamp generational"], by["hamp async"]
        print(f"slots {slots}: async/generational HAMP HV at equal evaluations "
              f"{aa['hv_equal_evals'] / ga['hv_equal_evals']:.4f} (target >= 0.98), at equal "
              f"wall-clock {aa['hv_equal_time'] / ga['hv_equal_time']:.4f} (target > 1); "
              + (f"HAMP async / NSGA-II async at equal wall-clock "
                 f"{aa['hv_equal_time'] / by['nsga2 async']['hv_equal_time']:.4f}"
                 if "nsga2 async" in by else ""))
    if args.curve:
        print("\nmedian HV after the first n evaluations (n = 20/40/60/80/100% of the budget):")
        for r in rows:
            ratio = ""
            if r["method"] == "hamp async":
                g = next(q for q in rows if q["slots"] == r["slots"]
                         and q["method"] == "hamp generational")
                ratio = " (async/generational: " + " ".join(
                    f"{a / b:.3f}" for a, b in zip(r["hv_curve"], g["hv_curve"])) + ")"
            print(f"slots {r['slots']} {r['method']} n={r['curve_evals']}: "
                  + " ".join(f"{v:.4f}" for v in r["hv_curve"]) + ratio)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
