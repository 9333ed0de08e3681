"""Scaling of the generational driver on a simulated multi-node Ray cluster (issue 5).

Every evaluation sleeps 1.0 s +- 10% (seeded jitter; ``evaluator.kind: synthetic``), so the
evaluator costs no CPU and any lost throughput is the driver's or Ray's. The REAL driver
(``prunesearch.cluster.driver.run_search``) runs ``method: random`` (the algorithm's own ask/tell
time is then negligible; HAMP's is measured separately and reported beside it) with
``4 x slots`` candidates per generation, on a ``ray.cluster_utils.Cluster`` of one head and
``--nodes`` worker nodes that each offer a share of the custom ``evaluator`` resource (several
actors per node).

Reported per slot count:

* throughput: evaluations / search wall time (first dispatch of generation 1 to the end of the
  last generation, so actor start-up is excluded; reported separately);
* efficiency: throughput / ideal, with ideal = slots / mean evaluation time (measured on the
  actors, from the journal's ``wall_s``), beside the efficiency a zero-overhead driver would
  reach with the same durations (greedy dispatch; the +-10% jitter alone leaves the last
  evaluations of each generation finishing unevenly);
* driver overhead per evaluation: search wall time spent in the driver process *outside*
  ``ray.wait`` (dispatching, collecting, journaling with fsync, telling, asking, checkpointing,
  metrics), divided by the evaluations; split into the per-result work inside the pool loop
  (with its ``os.fsync`` wall time and main-thread CPU time) and the work between generations.

Usage::

    .venv/bin/python bench/scaling.py                      # 1 2 4 8 16 slots, 2 generations
    .venv/bin/python bench/scaling.py --slots 4 16 --generations 3
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.cluster_utils import Cluster

from prunesearch.cluster import actors as actors_module
from prunesearch.cluster.config import load_config
from prunesearch.cluster.driver import run_search

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "scaling.yaml"


class _Timers:
    """Wall time inside ``ray.wait`` and the span of the evaluation phase, in the driver."""

    def __init__(self) -> None:
        self.wait_s = 0.0
        self.first_dispatch: float | None = None
        self.last_done: float | None = None
        self.wait_in_span_s = 0.0
        self.in_run = False
        self.wait_in_runs_s = 0.0
        self.cpu_in_runs_s = 0.0  # main-thread CPU time inside EvaluatorPool.run
        self.cpu_wait_in_runs_s = 0.0  # ... of which inside ray.wait
        self.fsync_in_runs_s = 0.0  # wall time in os.fsync inside EvaluatorPool.run
        self.fsync_calls: list[tuple[float, float]] = []  # (start, wall seconds)
        self.generation_spans: list[tuple[float, float]] = []


@contextmanager
def _instrument(timers: _Timers) -> Iterator[None]:
    """Time ``ray.wait`` and every ``EvaluatorPool.run`` call (one per generation).

    Patching is local to this process (the driver); actors are untouched.
    """
    real_wait = ray.wait
    real_run = actors_module.EvaluatorPool.run
    real_fsync = os.fsync

    def timed_wait(*args: Any, **kwargs: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return real_wait(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            timers.wait_s += elapsed
            if timers.first_dispatch is not None:
                timers.wait_in_span_s += elapsed
            if timers.in_run:
                timers.wait_in_runs_s += elapsed
                timers.cpu_wait_in_runs_s += time.thread_time() - cpu

    def timed_fsync(fd: int) -> None:
        start = time.perf_counter()
        try:
            real_fsync(fd)
        finally:
            elapsed = time.perf_counter() - start
            timers.fsync_calls.append((start, elapsed))
            if timers.in_run:
                timers.fsync_in_runs_s += elapsed

    def timed_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        if timers.first_dispatch is None:
            timers.first_dispatch = start
        timers.in_run = True
        cpu = time.thread_time()
        try:
            return real_run(self, *args, **kwargs)
        finally:
            timers.in_run = False
            timers.cpu_in_runs_s += time.thread_time() - cpu
            end = time.perf_counter()
            timers.last_done = end
            timers.generation_spans.append((start, end))

    ray.wait = timed_wait
    actors_module.EvaluatorPool.run = timed_run
    os.fsync = timed_fsync
    try:
        yield
    finally:
        ray.wait = real_wait
        actors_module.EvaluatorPool.run = real_run
        os.fsync = real_fsync


def _start_cluster(nodes: int, units_per_node: int) -> Cluster:
    # Small object stores: nothing big travels here, and the machine has 24 GiB for everyone.
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": 100 * 2**20,
                        "include_dashboard": False},
    )
    for _ in range(nodes):
        cluster.add_node(num_cpus=1, resources={"evaluator": units_per_node},
                         object_store_memory=100 * 2**20)
    cluster.wait_for_nodes()
    return cluster


def greedy_makespan(durations: list[float], slots: int) -> float:
    """Makespan of dispatching ``durations`` in order to ``slots`` workers, each job to the
    first free worker, with zero overhead: the best the driver can do with these durations."""
    free = [0.0] * slots
    heapq.heapify(free)
    for duration in durations:
        heapq.heappush(free, heapq.heappop(free) + duration)
    return max(free)


def run_scaling(slots: int, *, generations: int, cluster: Cluster, workdir: Path,
                log: Callable[[str], None]) -> dict[str, Any]:
    """One search with ``slots`` evaluators; returns the measured figures."""
    pop_size = 4 * slots
    budget = pop_size * generations
    config = load_config(CONFIG, {
        "search": {"pop_size": pop_size, "budget": budget},
        "cluster": {"num_evaluators": slots},
    })
    run_dir = workdir / f"slots-{slots}"
    timers = _Timers()
    lines: list[str] = []
    start = time.perf_counter()
    with _instrument(timers):
        summary = run_search(config, run_dir, address=cluster.address, log=lines.append)
    total_s = time.perf_counter() - start
    if ray.is_initialized():
        ray.shutdown()
    journal = [json.loads(x) for x in (run_dir / "journal.jsonl").read_text().splitlines()]
    evaluations = len(journal)
    eval_times = [float(e["wall_s"]) for e in journal if e["status"] == "ok"]
    mean_eval = statistics.fmean(eval_times)
    assert timers.first_dispatch is not None and timers.last_done is not None
    span = timers.last_done - timers.first_dispatch
    throughput = evaluations / span
    ideal = slots / mean_eval
    overhead_ms = 1000.0 * (span - timers.wait_in_span_s) / evaluations
    # Jitter alone costs efficiency (the last evaluations of a generation finish unevenly):
    # the zero-overhead greedy schedule of the same durations, generation by generation.
    by_generation: dict[int, list[tuple[int, float]]] = {}
    for entry in journal:
        by_generation.setdefault(int(entry["generation"]), []).append(
            (int(entry["id"]), float(entry["wall_s"])))
    bound_span = sum(greedy_makespan([d for _, d in sorted(items)], slots)
                     for items in by_generation.values())
    bound_efficiency = evaluations * mean_eval / (slots * bound_span)
    in_runs = sum(end - begin for begin, end in timers.generation_spans)
    # Split: per-result work inside the pool loop (dispatch, collect, journal) vs the work
    # between generations (tell, ask, checkpoint, report, metrics) while every actor is idle.
    per_result_ms = 1000.0 * (in_runs - timers.wait_in_runs_s) / evaluations
    between_s = [b[0] - a[1] for a, b in zip(timers.generation_spans, timers.generation_spans[1:])]
    between_ms = 1000.0 * statistics.fmean(between_s) if between_s else float("nan")
    fsync_ms = 1000.0 * sum(
        elapsed for begin, elapsed in timers.fsync_calls
        if timers.first_dispatch <= begin < timers.last_done
    ) / evaluations
    cpu_ms = 1000.0 * (timers.cpu_in_runs_s - timers.cpu_wait_in_runs_s) / evaluations
    # The best any scheduler could do with these exact durations is bounded below by the
    # per-generation load (sum / slots) and by the longest single evaluation.
    row = {
        "slots": slots,
        "evaluations": evaluations,
        "failed": sum(1 for e in journal if e["status"] != "ok"),
        "generations": len(timers.generation_spans),
        "mean_eval_s": mean_eval,
        "search_wall_s": span,
        "run_search_wall_s": total_s,
        "throughput": throughput,
        "ideal": ideal,
        "efficiency": throughput / ideal,
        "jitter_bound_efficiency": bound_efficiency,
        "driver_overhead_ms": overhead_ms,
        "per_result_ms": per_result_ms,
        "between_generations_ms": between_ms,
        "fsync_ms": fsync_ms,
        "pool_loop_cpu_ms": cpu_ms,
        "summary_status": summary.get("status"),
    }
    log(f"slots={slots:2d}  evals={evaluations:3d}  mean eval {mean_eval:.3f} s  "
        f"search {span:6.2f} s (run_search {total_s:6.2f} s)  throughput {throughput:6.2f}/s  "
        f"ideal {ideal:6.2f}/s  efficiency {row['efficiency']:.3f} "
        f"(zero-overhead greedy bound {bound_efficiency:.3f})  "
        f"driver overhead {overhead_ms:.2f} ms/eval (in pool loop {per_result_ms:.2f} ms/eval, "
        f"between generations {between_ms:.0f} ms; fsync {fsync_ms:.2f} ms/eval, "
        f"pool-loop CPU {cpu_ms:.2f} ms/eval)")
    return row


def hamp_ask_tell(pop_size: int, generations: int, seed: int = 0) -> dict[str, float]:
    """Median ask and tell time per generation of HAMP on the synthetic problem (no Ray)."""
    from prunesearch.search.problems import SyntheticPruningProblem
    from prunesearch.search.registry import make_algorithm
    from prunesearch.search.settings import SearchSettings

    problem = SyntheticPruningProblem()
    settings = SearchSettings(pop_size=pop_size, budget=pop_size * (generations + 1))
    algorithm = make_algorithm("hamp", settings)
    algorithm.setup(problem, seed=seed, termination=("n_gen", generations + 1))
    asks, tells = [], []
    for _ in range(generations + 1):
        start = time.perf_counter()
        population = algorithm.ask()
        asks.append(time.perf_counter() - start)
        algorithm.evaluator.eval(problem, population)
        start = time.perf_counter()
        algorithm.tell(infills=population)
        tells.append(time.perf_counter() - start)
    # The first generation is random sampling; later ones run the surrogate and local search.
    return {
        "pop_size": pop_size,
        "ask_ms": 1000.0 * statistics.median(asks[1:]),
        "tell_ms": 1000.0 * statistics.median(tells[1:]),
        "ask_max_ms": 1000.0 * max(asks[1:]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=4, help="simulated worker nodes")
    parser.add_argument("--hamp-generations", type=int, default=3,
                        help="HAMP generations timed for ask/tell (0: skip)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if any(s < 1 for s in args.slots) or args.generations < 1 or args.nodes < 1:
        parser.error("--slots, --generations and --nodes must be >= 1")

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}, ray {ray.__version__}")
    units = math.ceil(max(args.slots) / args.nodes)
    cluster = _start_cluster(args.nodes, units)
    print(f"cluster: head + {args.nodes} worker nodes x {units} evaluator units")
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
            for slots in args.slots:
                rows.append(run_scaling(slots, generations=args.generations, cluster=cluster,
                                        workdir=Path(tmp), log=print))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()

    hamp_rows = []
    if args.hamp_generations > 0:
        np.random.seed(0)
        for slots in args.slots:
            try:
                row = hamp_ask_tell(4 * slots, args.hamp_generations)
            except Exception as exc:  # HAMP may be unavailable in a partial checkout
                print(f"HAMP ask/tell not measured: {type(exc).__name__}: {exc}")
                break
            hamp_rows.append(row)
            print(f"HAMP pop {row['pop_size']:3d}: ask {row['ask_ms']:8.1f} ms  "
                  f"tell {row['tell_ms']:7.1f} ms per generation "
                  f"(max ask {row['ask_max_ms']:.1f} ms)")

    print("\n| slots | evals | mean eval (s) | search wall (s) | throughput (eval/s) | ideal | "
          "efficiency | jitter bound | driver overhead (ms/eval) | in pool loop (ms/eval) | "
          "of which fsync (ms/eval) | pool-loop CPU (ms/eval) | between generations (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['slots']} | {r['evaluations']} | {r['mean_eval_s']:.3f} | "
              f"{r['search_wall_s']:.2f} | {r['throughput']:.2f} | {r['ideal']:.2f} | "
              f"{r['efficiency']:.3f} | {r['jitter_bound_efficiency']:.3f} | "
              f"{r['driver_overhead_ms']:.2f} | "
              f"{r['per_result_ms']:.2f} | {r['fsync_ms']:.2f} | {r['pool_loop_cpu_ms']:.2f} | "
              f"{r['between_generations_ms']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"scaling": rows, "hamp": hamp_rows}, indent=2))
    worst = min(r["efficiency"] for r in rows)
    print(f"\nworst efficiency {worst:.3f} (target >= 0.9 at 16 slots); "
          f"max driver overhead {max(r['driver_overhead_ms'] for r in rows):.2f} ms/eval "
          f"(target < 5 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
