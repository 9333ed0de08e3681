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

Issue 13 (``search.mode: async``) adds: ``--modes generational async``, ``--method hamp`` (the
driver's real asks and tells), ``--pop-factor 1`` (population = slots), ``--jitter 0.5`` and
``--duration macs`` (sleep proportional to the candidate's MACs), and ``--light`` actors: several
simulated evaluators per actor process (threads that sleep; torch is never imported), so 64
slots fit on a small machine. With light actors every evaluation reports its start and end on
the actor, and efficiency is measured directly: busy slot-seconds / (slots x span from the first
start to the last end), beside the zero-overhead greedy bound of the same durations (per
generation for the generational mode; over the whole run, in dispatch order, for async: the
drain at the end of a finite budget is in both). "Steady-state" efficiency is the same ratio
over the window that ends at the last dispatch (the final drain left out). The "dispatch gap"
is how long an evaluator sat idle between one evaluation's end and its next start (the round
trip through Ray and the driver's dispatch thread); ``--ray-floor`` also runs a driverless Ray
loop of the same slots and durations on the same cluster, whose gap and efficiency are what
Ray's round trip alone costs on this machine.

Usage::

    .venv/bin/python bench/scaling.py                      # 1 2 4 8 16 slots, 2 generations
    .venv/bin/python bench/scaling.py --slots 4 16 --generations 3
    # issue 13: both modes, HAMP, population = slots, +-50% durations, light actors
    .venv/bin/python bench/scaling.py --slots 1 4 16 64 --modes generational async \
        --method hamp --pop-factor 1 --jitter 0.5 --generations 16 --light --hamp-generations 0
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
        self.async_wait_s = 0.0  # main thread blocked waiting for results (async loop)
        self.cpu_first: float | None = None  # process CPU time at the first dispatch
        self.cpu_last: float | None = None  # ... at the end of the last evaluation phase


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
            timers.cpu_first = time.process_time()
        timers.in_run = True
        cpu = time.thread_time()
        try:
            return real_run(self, *args, **kwargs)
        finally:
            timers.in_run = False
            timers.cpu_in_runs_s += time.thread_time() - cpu
            end = time.perf_counter()
            timers.last_done = end
            timers.cpu_last = time.process_time()
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


@ray.remote
class LightHost:
    """Several simulated evaluators in one process: ``max_concurrency`` threads that sleep.

    Only the synthetic evaluator is built (torch is never imported); each result carries the
    evaluation's start and end (``time.time()`` on this machine) for the efficiency figure.
    """

    def __init__(self, holder: str, namespace: str, threads: int) -> None:
        from prunesearch.methods.synthetic import SyntheticEvaluator

        self._evaluator = SyntheticEvaluator(actors_module.fetch_payload(holder, namespace))

    def ready(self) -> bool:
        return True

    def can_measure(self) -> bool:
        return False

    def evaluate(self, genome: Any, candidate_id: int, seed: int) -> dict[str, Any]:
        start = time.time()
        result = dict(self._evaluator.evaluate(list(genome), candidate_id=candidate_id,
                                               seed=seed))
        end = time.time()
        result["metrics"] = {**result.get("metrics", {}), "t_start": start, "t_end": end}
        result["node"] = ray.get_runtime_context().get_node_id()
        return result


@ray.remote
class _SleepHost:
    """The Ray floor's actor: ``max_concurrency`` threads that only sleep (no evaluator)."""

    def sleep(self, seconds: float) -> tuple[float, float]:
        start = time.time()
        time.sleep(seconds)
        return start, time.time()


def ray_floor(slots: int, evaluations: int, *, jitter: float, sleep_s: float, per_process: int,
              seed: int = 0) -> dict[str, Any]:
    """Efficiency of a driverless loop on the same cluster: no search, no journal, no ask.

    ``slots`` sleeping evaluators in light processes of ``per_process`` threads; one loop keeps
    each busy (``ray.wait`` for one call, hand its slot the next sleep of 1 s +- ``jitter``). What
    it loses to the zero-overhead bound is Ray's round trip on this machine, which no driver
    change removes; the driver's own cost is what the search loses beyond it.
    """
    rng = np.random.default_rng(seed)
    per = min(per_process, slots)
    hosts = [_SleepHost.options(max_concurrency=per, num_cpus=0,
                                resources={"evaluator": per}).remote()
             for _ in range(math.ceil(slots / per))]
    ray.get([h.sleep.remote(0.0) for h in hosts])
    durations = sleep_s * (1.0 + jitter * rng.uniform(-1.0, 1.0, size=evaluations))
    running: dict[Any, int] = {}
    submitted = 0
    starts: list[float] = []
    ends: list[float] = []

    def submit(slot: int) -> None:
        nonlocal submitted
        running[hosts[slot // per].sleep.remote(float(durations[submitted]))] = slot
        submitted += 1

    for slot in range(min(slots, evaluations)):
        submit(slot)
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        slot = running.pop(ready[0])
        start, end = ray.get(ready[0])
        starts.append(start)
        ends.append(end)
        if submitted < evaluations:
            submit(slot)
    for h in hosts:
        ray.kill(h)
    busy, efficiency = _busy_efficiency(starts, ends, slots)
    order = np.argsort(starts)
    bound_span = greedy_makespan([ends[i] - starts[i] for i in order], slots)
    bound = busy / (slots * bound_span)
    return {"slots": slots, "evaluations": evaluations, "efficiency": efficiency,
            "zero_overhead_bound": bound,
            "dispatch_gap_ms": _quantiles_ms(dispatch_gaps(starts, ends, slots))}


@contextmanager
def _light_actors(per_process: int) -> Iterator[None]:
    """Make EvaluatorPool start one LightHost per ``per_process`` slots (this process only)."""
    real_start = actors_module.EvaluatorPool._start

    def light_start(self: Any, index: int, generation: int) -> Any:
        hosts = self.__dict__.setdefault("_light_hosts", {})
        per = min(per_process, self._cluster.num_evaluators)
        key = (index // per, generation)
        if key not in hosts:
            hosts[key] = LightHost.options(
                namespace=self._namespace, max_concurrency=per, max_restarts=0,
                max_task_retries=0, num_cpus=0, resources={"evaluator": per},
            ).remote(self._holder_name, self._namespace, self._threads)
        return actors_module._Slot(index=index, handle=hosts[key], name=f"evaluator-{index}",
                                   generation=generation)

    actors_module.EvaluatorPool._start = light_start
    try:
        yield
    finally:
        actors_module.EvaluatorPool._start = real_start


@contextmanager
def _instrument_async(timers: _Timers) -> Iterator[None]:
    """Time the async loop (its span) and the main thread's blocking waits for results."""
    from prunesearch.cluster import async_loop

    real_get, real_run = async_loop.AsyncLoop._get, async_loop.AsyncLoop.run

    def timed_get(self: Any, block: bool) -> Any:
        start = time.perf_counter()
        try:
            return real_get(self, block)
        finally:
            if block:
                timers.async_wait_s += time.perf_counter() - start

    def timed_run(self: Any) -> Any:
        timers.first_dispatch = time.perf_counter()
        timers.cpu_first = time.process_time()
        try:
            return real_run(self)
        finally:
            timers.last_done = time.perf_counter()
            timers.cpu_last = time.process_time()

    async_loop.AsyncLoop._get = timed_get
    async_loop.AsyncLoop.run = timed_run
    try:
        yield
    finally:
        async_loop.AsyncLoop._get = real_get
        async_loop.AsyncLoop.run = real_run


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


def _busy_efficiency(starts: list[float], ends: list[float],
                     slots: int) -> tuple[float, float]:
    """Busy slot-seconds, and their share of ``slots`` x the span from first start to last end."""
    busy = sum(b - a for a, b in zip(starts, ends))
    return busy, busy / (slots * (max(ends) - min(starts)))


def dispatch_gaps(starts: list[float], ends: list[float], slots: int) -> list[float]:
    """Seconds an evaluator sat idle between one evaluation's end and its next start.

    The dispatch thread hands each freed evaluator the next queued candidate, first freed first
    served, so the (slots + i)-th start in time order follows the i-th end. The gap is the round
    trip that costs efficiency: the result reaching the driver, the dispatch thread getting the
    GIL, the next call reaching the actor (and, where the queue ran dry, the wait for an ask).
    """
    s, e = sorted(starts), sorted(ends)
    return [s[slots + i] - e[i] for i in range(len(s) - slots)]


def _quantiles_ms(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    q = np.quantile(np.asarray(values) * 1000.0, [0.5, 0.9, 0.99])
    return {"mean": 1000.0 * statistics.fmean(values), "p50": float(q[0]), "p90": float(q[1]),
            "p99": float(q[2])}


def _gap_text(gap: dict[str, float] | None) -> str:
    return "-" if gap is None else f"{gap['mean']:.1f} / {gap['p50']:.1f}"


def lpt_bound(durations: list[float], slots: int) -> float:
    """Makespan of list scheduling in the given order (each job to the first free slot)."""
    return greedy_makespan(durations, slots)


def run_scaling(slots: int, *, generations: int, cluster: Cluster, workdir: Path,
                log: Callable[[str], None], mode: str = "generational", method: str = "random",
                pop_factor: int = 4, jitter: float = 0.1, duration: str = "fixed",
                sleep_s: float = 1.0, light: bool = False,
                per_process: int = 8, queue_margin: int | None = None,
                adaptive_margin: bool | None = None) -> dict[str, Any]:
    """One search with ``slots`` evaluators; returns the measured figures."""
    pop_size = max(4, pop_factor * slots)
    budget = pop_factor * slots * generations
    config = load_config(CONFIG, {
        "method": method,
        "evaluator": {"synthetic_sleep_s": sleep_s, "synthetic_jitter": jitter,
                      "synthetic_duration": duration},
        "search": {"pop_size": pop_size, "budget": budget, "mode": mode,
                   "async_checkpoint_s": 10.0,
                   **({} if queue_margin is None else {"async_queue_margin": queue_margin}),
                   **({} if adaptive_margin is None
                      else {"async_adaptive_margin": adaptive_margin})},
        "cluster": {"num_evaluators": slots},
    })
    run_dir = workdir / f"{mode}-{method}-{duration}-slots-{slots}"
    timers = _Timers()
    lines: list[str] = []
    start = time.perf_counter()
    with _instrument(timers), _instrument_async(timers), \
            (_light_actors(per_process) if light else _nullcontext()):
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
    # Main-thread time not spent waiting for results, per evaluation (generational: outside
    # ray.wait; async: outside the wait for the dispatch thread's next result).
    waited = timers.wait_in_span_s if mode == "generational" else timers.async_wait_s
    overhead_ms = 1000.0 * (span - waited) / evaluations
    # Driver process CPU (every thread: main, dispatch, Ray's own) over the evaluation phase.
    driver_cpu_s = (timers.cpu_last or 0.0) - (timers.cpu_first or 0.0)
    # The zero-overhead greedy schedule of the same durations: per generation (the barrier)
    # for the generational mode, over the whole run in dispatch order for async.
    if mode == "generational":
        by_generation: dict[int, list[tuple[int, float]]] = {}
        for entry in journal:
            by_generation.setdefault(int(entry["generation"]), []).append(
                (int(entry["id"]), float(entry["wall_s"])))
        bound_span = sum(greedy_makespan([d for _, d in sorted(items)], slots)
                         for items in by_generation.values())
    else:
        timed = sorted(journal, key=lambda e: e["metrics"].get("t_start", e["id"]))
        bound_span = greedy_makespan([float(e["wall_s"]) for e in timed], slots)
    bound_efficiency = evaluations * mean_eval / (slots * bound_span)
    efficiency = throughput / ideal
    steady = None
    gaps: list[float] = []
    if light:  # measured on the actors: busy slot-seconds over slots x span
        starts = [float(e["metrics"]["t_start"]) for e in journal]
        ends = [float(e["metrics"]["t_end"]) for e in journal]
        t0, t1, last_start = min(starts), max(ends), max(starts)
        _, efficiency = _busy_efficiency(starts, ends, slots)
        busy_steady = sum(max(0.0, min(b, last_start) - a) for a, b in zip(starts, ends))
        steady = busy_steady / (slots * (last_start - t0)) if last_start > t0 else None
        span = t1 - t0
        throughput = evaluations / span
        gaps = dispatch_gaps(starts, ends, slots)
    in_runs = sum(end - begin for begin, end in timers.generation_spans)
    per_result_ms = (1000.0 * (in_runs - timers.wait_in_runs_s) / evaluations
                     if mode == "generational" else float("nan"))
    between_s = [b[0] - a[1] for a, b in zip(timers.generation_spans, timers.generation_spans[1:])]
    between_ms = 1000.0 * statistics.fmean(between_s) if between_s else float("nan")
    fsync_ms = 1000.0 * sum(
        elapsed for begin, elapsed in timers.fsync_calls
        if timers.first_dispatch <= begin < timers.last_done
    ) / evaluations
    cpu_ms = 1000.0 * (timers.cpu_in_runs_s - timers.cpu_wait_in_runs_s) / evaluations
    row = {
        "slots": slots,
        "mode": mode,
        "method": method,
        "duration": duration,
        "jitter": jitter,
        "pop_size": pop_size,
        "evaluations": evaluations,
        "failed": sum(1 for e in journal if e["status"] != "ok"),
        "generations": len(timers.generation_spans),
        "mean_eval_s": mean_eval,
        "search_wall_s": span,
        "run_search_wall_s": total_s,
        "throughput": throughput,
        "ideal": ideal,
        "efficiency": efficiency,
        "steady_efficiency": steady,
        "dispatch_gap_ms": _quantiles_ms(gaps),
        "jitter_bound_efficiency": bound_efficiency,
        "driver_overhead_ms": overhead_ms,
        "driver_cpu_ms": 1000.0 * driver_cpu_s / evaluations,
        "per_result_ms": per_result_ms,
        "between_generations_ms": between_ms,
        "fsync_ms": fsync_ms,
        "pool_loop_cpu_ms": cpu_ms,
        "summary_status": summary.get("status"),
        "hypervolume": summary.get("hypervolume"),
    }
    steady_text = f" (steady-state {steady:.3f})" if steady is not None else ""
    if row["dispatch_gap_ms"] is not None:
        g = row["dispatch_gap_ms"]
        steady_text += (f" dispatch gap mean {g['mean']:.1f} ms, p50 {g['p50']:.1f}, "
                        f"p90 {g['p90']:.1f}, p99 {g['p99']:.1f}")
    log(f"{mode:12s} {method} {duration} slots={slots:2d}  evals={evaluations:4d}  "
        f"mean eval {mean_eval:.3f} s  search {span:6.2f} s (run_search {total_s:6.2f} s)  "
        f"efficiency {efficiency:.3f}{steady_text} (zero-overhead greedy bound "
        f"{bound_efficiency:.3f})  driver main-thread {overhead_ms:.2f} ms/eval, driver CPU "
        f"{row['driver_cpu_ms']:.2f} ms/eval, fsync {fsync_ms:.2f} ms/eval")
    return row


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


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
    parser.add_argument("--modes", nargs="+", default=["generational"],
                        choices=["generational", "async"])
    parser.add_argument("--method", default="random", choices=["random", "hamp", "nsga2"])
    parser.add_argument("--pop-factor", type=int, default=4,
                        help="population = this x slots (1: population = slots)")
    parser.add_argument("--jitter", type=float, default=0.1, help="relative duration jitter")
    parser.add_argument("--duration", default="fixed", choices=["fixed", "macs"],
                        help="macs: durations proportional to the candidate's MACs")
    parser.add_argument("--sleep", type=float, default=1.0,
                        help="seconds per evaluation (x MACs / dense MACs with --duration macs)")
    parser.add_argument("--light", action="store_true",
                        help="light actors: several simulated evaluators per process")
    parser.add_argument("--per-process", type=int, default=8,
                        help="simulated evaluators per light actor process")
    parser.add_argument("--queue-margin", type=int, default=None,
                        help="async: search.async_queue_margin (default: the config's)")
    parser.add_argument("--adaptive-margin", action=argparse.BooleanOptionalAction,
                        default=None, help="async: search.async_adaptive_margin")
    parser.add_argument("--ray-floor", action="store_true",
                        help="also run a driverless Ray loop of the same slots and durations "
                             "(light actors): what Ray's round trip alone costs here")
    args = parser.parse_args(argv)
    if any(s < 1 for s in args.slots) or args.generations < 1 or args.nodes < 1:
        parser.error("--slots, --generations and --nodes must be >= 1")
    if args.pop_factor < 1 or not 0 <= args.jitter <= 1 or args.per_process < 1:
        parser.error("--pop-factor and --per-process must be >= 1, --jitter in [0, 1]")

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}, ray {ray.__version__}")
    units = math.ceil(max(args.slots) / args.nodes)
    if args.light:  # whole light processes per node
        per = min(args.per_process, max(args.slots))
        units = per * math.ceil(units / per)
    print(f"load average before: {os.getloadavg()}")
    cluster = _start_cluster(args.nodes, units)
    print(f"cluster: head + {args.nodes} worker nodes x {units} evaluator units")
    rows = []
    floor_rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
            for slots in args.slots:
                for mode in args.modes:
                    rows.append(run_scaling(
                        slots, generations=args.generations, cluster=cluster,
                        workdir=Path(tmp), log=print, mode=mode, method=args.method,
                        pop_factor=args.pop_factor, jitter=args.jitter,
                        duration=args.duration, sleep_s=args.sleep, light=args.light,
                        per_process=args.per_process, queue_margin=args.queue_margin,
                        adaptive_margin=args.adaptive_margin))
        if args.ray_floor:
            ray.init(address=cluster.address)
            for slots in args.slots:
                floor = ray_floor(slots, args.pop_factor * slots * args.generations,
                                  jitter=args.jitter, sleep_s=args.sleep,
                                  per_process=args.per_process)
                floor_rows.append(floor)
                g = floor["dispatch_gap_ms"]
                print(f"ray floor    slots={slots:2d}  evals={floor['evaluations']:4d}  "
                      f"efficiency {floor['efficiency']:.3f} (zero-overhead bound "
                      f"{floor['zero_overhead_bound']:.3f})  dispatch gap mean {g['mean']:.1f} "
                      f"ms, p50 {g['p50']:.1f}, p90 {g['p90']:.1f}, p99 {g['p99']:.1f}")
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

    print(f"load average after: {os.getloadavg()}")
    print("\n| mode | slots | evals | mean eval (s) | search wall (s) | efficiency | steady-state "
          "| zero-overhead bound | driver main-thread (ms/eval) | driver CPU (ms/eval) "
          "| dispatch gap mean / p50 (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        steady = "-" if r["steady_efficiency"] is None else f"{r['steady_efficiency']:.3f}"
        print(f"| {r['mode']} | {r['slots']} | {r['evaluations']} | {r['mean_eval_s']:.3f} | "
              f"{r['search_wall_s']:.2f} | {r['efficiency']:.3f} | {steady} | "
              f"{r['jitter_bound_efficiency']:.3f} | {r['driver_overhead_ms']:.2f} | "
              f"{r['driver_cpu_ms']:.2f} | {_gap_text(r['dispatch_gap_ms'])} |")
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
        args.json.write_text(json.dumps({"scaling": rows, "hamp": hamp_rows,
                                               "ray_floor": floor_rows}, indent=2))
    worst = min(r["efficiency"] for r in rows)
    print(f"\nworst efficiency {worst:.3f} (target >= 0.9 at 16 slots); "
          f"max driver overhead {max(r['driver_overhead_ms'] for r in rows):.2f} ms/eval "
          f"(target < 5 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
