"""The evaluator actor pool: one Ray actor per evaluation slot, kept busy, replaced when it dies.

Each actor builds its :class:`~prunesearch.methods.task.Evaluator` once from the task payload
(numpy base weights, put into the object store once). Actors fetch it from a small holder actor by
name instead of taking the reference as a constructor argument: Ray cannot restore a
constructor's object-store arguments when it restarts an actor (ray-project/ray#53727, and it
logs an error line for every such actor), while the holder keeps the one copy alive for every
restart. Each actor then evaluates one genome per call. Actors hold the custom ``evaluator``
resource rather than CPUs (on a small machine, CPU reservations of long-lived actors deadlock
every other task) and fix torch's thread count themselves.

Ray restarts a dead actor (``max_restarts``) but never retries its calls
(``max_task_retries=0``): the pool retries a candidate itself, on another actor where it can, so
that it can count attempts and record the candidate as failed after ``max_retries``.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayError, RayTaskError

from prunesearch.methods.errors import PrunesearchError

__all__ = ["EvaluatorActor", "EvaluatorPool", "JobFeed", "PayloadHolder", "PoolError", "PoolJob",
           "actor_options", "fetch_payload", "resource_options", "start_holder"]


#: Fresh actors in a row that may fail to come up in one slot before the slot is dropped.
_MAX_START_FAILURES = 3
#: How long a restarting actor may stay unavailable before the pool replaces it.
_RESTART_PATIENCE_S = 120.0
#: Pause between liveness pings of a restarting actor.
_PING_INTERVAL_S = 0.2
#: Interval of the log line while the pool waits for its actors to be scheduled.
_START_LOG_S = 30.0


@ray.remote(num_cpus=0, max_restarts=0)
class PayloadHolder:
    """Holds the object ref of a pool's task payload for its actors to fetch by name.

    It lives on the driver's node and dies with the driver (it is not detached), so it outlives
    every evaluator restart of the run.
    """

    def __init__(self) -> None:
        self._box: list[Any] = []

    def hold(self, box: list[Any]) -> None:
        """Keep ``box`` (a one-element list holding the payload's object ref)."""
        self._box = box

    def box(self) -> list[Any]:
        """The box given to :meth:`hold` (its ref stays unresolved)."""
        return self._box


def start_holder(payload_ref: Any, *, name: str, namespace: str) -> Any:
    """A :class:`PayloadHolder` named ``name`` holding ``payload_ref``, on the driver's node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    holder = PayloadHolder.options(
        name=name, namespace=namespace,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False)).remote()
    ray.get(holder.hold.remote([payload_ref]))
    return holder


def fetch_payload(holder: str, namespace: str) -> Any:
    """The payload held by the :class:`PayloadHolder` named ``holder`` in ``namespace``."""
    box = ray.get(ray.get_actor(holder, namespace=namespace).box.remote())
    return ray.get(box[0])


@ray.remote
class EvaluatorActor:
    """Ray actor wrapping one evaluator built from the task payload.

    Args:
        holder: name of the :class:`PayloadHolder` of the task payload
            (``SearchTask.payload()``); fetched on every (re)start.
        namespace: the run's Ray namespace (the holder's).
        threads: torch intra-op threads (fixed so latency and training speed do not depend on
            how many evaluators share the node).
    """

    def __init__(self, holder: str, namespace: str, threads: int) -> None:
        from prunesearch.methods.task import make_evaluator

        self._evaluator = make_evaluator(fetch_payload(holder, namespace), threads=threads)

    def ready(self) -> bool:
        """Answer once the evaluator is built (used as a liveness ping)."""
        return True

    def can_measure(self) -> bool:
        """True when the evaluator can re-time a genome end to end on this actor's device."""
        return callable(getattr(self._evaluator, "measure", None))

    def evaluate(self, genome: Sequence[int], candidate_id: int, seed: int) -> dict[str, Any]:
        """Evaluate one genome; the result dict of ``methods.task`` plus ``node``."""
        start = time.perf_counter()
        result = self._evaluator.evaluate(list(genome), candidate_id=candidate_id, seed=seed)
        result = dict(result)
        result.setdefault("wall_s", time.perf_counter() - start)
        result["node"] = ray.get_runtime_context().get_node_id()
        return result

    def measure(self, genome: Sequence[int], weights: dict[str, Any] | None) -> dict[str, float]:
        """End-to-end timing of one genome on this actor's (idle) device."""
        return dict(self._evaluator.measure(list(genome), weights))


def actor_options(cluster: Any, *, name: str, namespace: str) -> dict[str, Any]:
    """Ray actor options from the ``cluster`` config section.

    Args:
        cluster: a :class:`~prunesearch.cluster.config.ClusterSettings`.
        name: the actor's name (``evaluator-<i>``).
        namespace: the run's Ray namespace (names are unique per namespace).
    """
    return {
        "name": name,
        "namespace": namespace,
        "max_restarts": cluster.max_restarts,
        # The pool retries candidates itself, so attempts can be counted and capped.
        "max_task_retries": 0,
        **resource_options(cluster),
    }


def resource_options(cluster: Any) -> dict[str, Any]:
    """What one evaluator (an actor, or a task such as a HALP target or a fine-tune member)
    reserves, from the ``cluster`` config section: CPUs, the custom ``evaluator`` resource,
    GPUs (fractions allowed) and the accelerator type."""
    options: dict[str, Any] = {"num_cpus": cluster.num_cpus}
    if cluster.evaluator_resource > 0:
        options["resources"] = {"evaluator": cluster.evaluator_resource}
    if cluster.num_gpus > 0:
        options["num_gpus"] = cluster.num_gpus
    if cluster.accelerator_type:
        options["accelerator_type"] = cluster.accelerator_type
    return options


class PoolError(PrunesearchError, RuntimeError):
    """The pool lost every evaluator and could not start new ones (a failed run: exit 1)."""

    exit_code = 1


@dataclass
class PoolJob:
    """One candidate to evaluate, with its attempt bookkeeping."""

    candidate_id: int
    genome: tuple[int, ...]
    seed: int
    attempt: int = 1
    tried_on: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


#: Poll interval for results while an evaluator is idle, right after activity (serve).
_QUICK_POLL_S = 0.001


class JobFeed:
    """A thread-safe queue of jobs for :meth:`EvaluatorPool.serve`.

    Jobs come in groups (one ask of the asynchronous driver each). Groups are served first come
    first served; inside a group the longest expected cost (MACs, known before evaluating) goes
    first (longest-processing-time-first list scheduling against stragglers), ties by candidate
    id. Ordering the whole queue by cost instead starved narrow candidates: they kept being
    overtaken by wider ones asked later (bench/async_quality.py: HV 0.79x generational HAMP
    at equal evaluations, 16 slots, instead of 0.96x). A retried job (its actor died) goes
    before everything else.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, float, int, int, PoolJob]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)

    def put(self, job: PoolJob, cost: float = 0.0, *, group: int = 0) -> None:
        """Queue ``job`` in ask group ``group``; inside a group a larger ``cost`` goes first."""
        with self._lock:
            heapq.heappush(self._heap, (int(group), -float(cost), job.candidate_id,
                                        next(self._order), job))
            self._queued.notify_all()

    def retry(self, job: PoolJob) -> None:
        """Queue ``job`` first in line (a re-submission after its actor was lost)."""
        with self._lock:
            heapq.heappush(self._heap, (-1, 0.0, job.candidate_id, next(self._order), job))
            self._queued.notify_all()

    def wait(self, timeout: float) -> bool:
        """Block until a job is queued (True at once if one is) or ``timeout`` seconds pass."""
        with self._lock:
            return self._queued.wait_for(lambda: bool(self._heap), timeout=timeout)

    def pop(self) -> PoolJob | None:
        """The next job, or None when the feed is empty."""
        with self._lock:
            return heapq.heappop(self._heap)[-1] if self._heap else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._heap)


@dataclass
class _Slot:
    index: int
    handle: Any
    name: str
    generation: int = 0  # how many times this slot's actor was replaced
    failures: int = 0  # consecutive liveness pings that failed (actor could not come back)


class EvaluatorPool:
    """A fixed number of evaluator actors that a driver feeds one candidate at a time.

    Args:
        payload_ref: object ref of the task payload (``ray.put`` once by the caller).
        cluster: the ``cluster`` config section.
        threads: torch threads per actor.
        namespace: Ray namespace of this run's actors.
        log: progress/warning lines.
    """

    def __init__(self, *, payload_ref: Any, cluster: Any, threads: int, namespace: str,
                 log: Callable[[str], None] = print) -> None:
        if cluster.num_evaluators < 1:
            raise ValueError(f"cluster.num_evaluators must be >= 1, got {cluster.num_evaluators!r}")
        self._cluster = cluster
        self._threads = int(threads)
        self._namespace = namespace
        self._log = log
        self._holder_name = f"payload-{uuid.uuid4().hex[:12]}"
        self._holder = start_holder(payload_ref, name=self._holder_name, namespace=namespace)
        self._slots = [self._start(i, 0) for i in range(cluster.num_evaluators)]
        # Wait for construction so that a broken payload fails the run at once, with its reason.
        # Actors wait for resources without a deadline (an autoscaler may be adding GPU nodes),
        # but the wait is logged so a request no node can satisfy is visible.
        refs = [s.handle.ready.remote() for s in self._slots]
        waited = 0.0
        try:
            while True:
                ready, pending = ray.wait(refs, num_returns=len(refs), timeout=_START_LOG_S)
                if not pending:
                    ray.get(ready)
                    break
                waited += _START_LOG_S
                request = actor_options(cluster, name="-", namespace="-")
                wanted = {k: request[k] for k in ("resources", "num_gpus", "num_cpus",
                                                  "accelerator_type") if request.get(k)}
                self._log(f"waiting {waited:.0f}s for {len(pending)} of {len(refs)} evaluator "
                          f"actors to start (each asks for {wanted}; cluster has "
                          f"{ray.available_resources()} free)")
        except RayError as exc:
            self.shutdown()
            raise PoolError(f"evaluator actors could not start: {_reason(exc)}") from exc
        self.deaths = 0
        #: Most calls in flight at once in :meth:`serve` (never more than the live actors).
        self.max_in_flight = 0
        self._health = _Liveness(self)

    @property
    def size(self) -> int:
        """Number of live slots."""
        return len(self._slots)

    def _start(self, index: int, generation: int) -> _Slot:
        name = f"evaluator-{index}" if generation == 0 else f"evaluator-{index}-r{generation}"
        try:  # a same-named actor left over from an earlier driver of this run
            ray.kill(ray.get_actor(name, namespace=self._namespace), no_restart=True)
        except (ValueError, RayError):
            pass
        options = actor_options(self._cluster, name=name, namespace=self._namespace)
        handle = EvaluatorActor.options(**options).remote(self._holder_name, self._namespace,
                                                          self._threads)
        return _Slot(index=index, handle=handle, name=name, generation=generation)

    def run(self, jobs: Sequence[PoolJob], on_result: Callable[[PoolJob, dict[str, Any]], None],
            *, failed_result: Callable[[str], dict[str, Any]]) -> None:
        """Evaluate ``jobs``, calling ``on_result(job, result)`` as each one finishes.

        Every actor gets a new job the moment it finishes one, while jobs remain. A job whose
        actor dies is queued again (first in line, on a different actor when one is free) until
        it has been tried ``1 + cluster.max_retries`` times; then it is reported with
        ``failed_result(reason)``. An exception raised inside the evaluator (a bug, not a
        crash) is reported as failed at once.

        Raises:
            PoolError: every actor died and none could be restarted.
        """
        queue: collections.deque[PoolJob] = collections.deque(jobs)
        health = self._health
        # Actors still restarting (e.g. waiting for a node with free resources) join as soon as
        # their ping answers; the batch never waits for them while others can work.
        idle: collections.deque[_Slot] = collections.deque(
            s for s in self._slots if not health.is_pinging(s))
        running: dict[Any, tuple[_Slot, PoolJob]] = {}
        max_attempts = 1 + self._cluster.max_retries

        def dispatch() -> None:
            while queue and idle:
                job = queue.popleft()
                slot = _pick(idle, job)
                job.tried_on.add(slot.index)
                ref = slot.handle.evaluate.remote(job.genome, job.candidate_id, job.seed)
                running[ref] = (slot, job)

        while queue or running:
            dispatch()
            if not running and not health.busy:
                raise PoolError("no evaluator actor is alive to run the remaining candidates")
            ref = health.wait(list(running), idle)
            if ref is None:  # a liveness ping settled (or is waiting to be re-sent)
                continue
            slot, job = running.pop(ref)
            try:
                result = ray.get(ref)
            except RayTaskError as exc:
                idle.append(slot)
                on_result(job, failed_result(f"evaluator raised: {_reason(exc)}"))
                continue
            except RayError as exc:  # the actor died: process killed, node lost, OOM
                self._actor_died(slot, job, exc, max_attempts, queue.appendleft,
                                 on_result, failed_result)
                continue
            idle.append(slot)
            # Hand the finished actor its next candidate before journaling (fsync) this result,
            # so no actor waits on the driver's disk.
            dispatch()
            on_result(job, result)

    def serve(self, feed: JobFeed, on_result: Callable[[PoolJob, dict[str, Any]], None], *,
              failed_result: Callable[[str], dict[str, Any]], stop: threading.Event,
              poll_s: float = 0.01) -> None:
        """Keep every actor busy with jobs from ``feed`` until ``stop`` is set (asynchronous mode).

        Meant to run in a thread of its own while the caller asks and tells in the main thread:
        an actor that finishes gets the next job of the feed at once, whatever the caller is
        doing. ``on_result(job, result)`` is called from this thread (hand it to the caller
        through a queue). Retries, failures and actor deaths are handled as in :meth:`run`; a
        job whose actor died goes back first in line. At most one job per live actor is in
        flight.

        Raises:
            PoolError: every actor died and none could be restarted.
        """
        health = self._health
        idle: collections.deque[_Slot] = collections.deque(
            s for s in self._slots if not health.is_pinging(s))
        running: dict[Any, tuple[_Slot, PoolJob]] = {}
        max_attempts = 1 + self._cluster.max_retries
        quiet = _QUICK_POLL_S  # current poll interval while an evaluator is idle

        def dispatch() -> None:
            while idle:
                job = feed.pop()
                if job is None:
                    return
                slot = _pick(idle, job)
                job.tried_on.add(slot.index)
                ref = slot.handle.evaluate.remote(job.genome, job.candidate_id, job.seed)
                running[ref] = (slot, job)
                self.max_in_flight = max(self.max_in_flight, len(running))

        while not stop.is_set():
            dispatch()
            if not running and not health.busy:
                if not idle:
                    raise PoolError("no evaluator actor is alive to run the remaining "
                                    "candidates")
                feed.wait(poll_s)  # every actor idle, nothing queued: wait for the caller
                continue
            timeout = 0.1  # every actor busy: stop is noticed within 0.1 s
            if idle:
                # A free evaluator waits for the caller's next ask: wake the moment it queues a
                # job (a ray.wait timeout of poll_s made such a dispatch wait ~5 ms on average),
                # and look for results between waits without blocking (ray.wait over 64 calls
                # costs ~0.04 ms of CPU): every 1 ms after activity, backing off to poll_s.
                if feed.wait(quiet):
                    quiet = _QUICK_POLL_S
                    continue
                timeout = 0.0
            ref = health.wait(list(running), idle, max_timeout=timeout)
            if ref is None:
                if idle:
                    quiet = min(2.0 * quiet, poll_s)
                continue
            quiet = _QUICK_POLL_S
            slot, job = running.pop(ref)
            try:
                result = ray.get(ref)
            except RayTaskError as exc:
                idle.append(slot)
                dispatch()
                on_result(job, failed_result(f"evaluator raised: {_reason(exc)}"))
                continue
            except RayError as exc:  # the actor died: process killed, node lost, OOM
                self._actor_died(slot, job, exc, max_attempts, feed.retry,
                                 on_result, failed_result)
                continue
            idle.append(slot)
            dispatch()
            on_result(job, result)

    def _actor_died(self, slot: _Slot, job: PoolJob, exc: BaseException, max_attempts: int,
                    requeue: Callable[[PoolJob], None],
                    on_result: Callable[[PoolJob, dict[str, Any]], None],
                    failed_result: Callable[[str], dict[str, Any]]) -> None:
        """``job``'s actor died (process killed, node lost, OOM): count it, ping the slot (Ray
        restarts the actor, ``max_restarts``; pings say when it is back or gone) and give the
        job to ``requeue`` (first in line) until its attempts are used up, then fail it."""
        self.deaths += 1
        reason = _reason(exc)
        job.errors.append(reason)
        self._log(f"evaluator {slot.name} died on candidate {job.candidate_id} "
                  f"(attempt {job.attempt}): {reason}")
        self._health.ping(slot)
        if job.attempt < max_attempts:
            job.attempt += 1
            requeue(job)
        else:
            on_result(job, failed_result(f"evaluator died {job.attempt} times: {reason}"))

    def _replace(self, slot: _Slot, exc: BaseException) -> _Slot | None:
        """A slot's actor is gone for good (restarts used up): start a fresh one in its place.

        A slot whose fresh actors keep failing to come up (e.g. the node cannot build the
        evaluator) is dropped after a few tries rather than replaced forever.

        Returns:
            The fresh slot (to be pinged), or None when the slot was dropped.
        """
        if slot.failures >= _MAX_START_FAILURES:
            self._log(f"evaluator slot {slot.index} dropped after {slot.failures} failures: "
                      f"{_reason(exc)}")
            self._slots = [s for s in self._slots if s is not slot]
            return None
        fresh = self._start(slot.index, slot.generation + 1)
        fresh.failures = slot.failures + 1
        self._slots = [fresh if s is slot else s for s in self._slots]
        self._log(f"evaluator {slot.name} is gone ({_reason(exc)}); started {fresh.name}")
        return fresh

    def can_measure(self) -> bool:
        """True when the actors can re-time genomes on their own device."""
        slot = self._live_slot()
        if slot is None:
            return False
        try:
            return bool(ray.get(slot.handle.can_measure.remote()))
        except RayError:
            return False

    def _live_slot(self) -> _Slot | None:
        return next((s for s in self._slots if not self._health.is_pinging(s)), None)

    def measure(self, genome: Sequence[int], weights: dict[str, Any] | None) -> dict[str, float]:
        """Re-time one genome on one actor (call only while the pool is otherwise idle).

        Raises:
            PoolError: no actor is alive.
        """
        slot = self._live_slot()
        if slot is None:
            raise PoolError("no evaluator actor is alive to re-time the front")
        return ray.get(slot.handle.measure.remote(list(genome), weights))

    def shutdown(self) -> None:
        """Kill every actor of the pool (they hold no state worth keeping)."""
        for slot in getattr(self, "_slots", []):
            try:
                ray.kill(slot.handle, no_restart=True)
            except (ValueError, RayError):
                pass
        self._slots = []
        holder = getattr(self, "_holder", None)
        if holder is not None:
            try:
                ray.kill(holder, no_restart=True)
            except (ValueError, RayError):
                pass
            self._holder = None


class _Liveness:
    """Pings of actors that died mid-call, until each is back (restarted) or replaced.

    A ping that fails with ``ActorUnavailableError`` means Ray is still restarting the actor:
    it is re-sent after a short pause (for at most ``_RESTART_PATIENCE_S``). ``ActorDiedError``
    (restarts used up) or a restart that takes too long gets the slot a fresh actor.
    """

    def __init__(self, pool: EvaluatorPool) -> None:
        self._pool = pool
        self._pending: dict[Any, _Slot] = {}
        self._later: list[tuple[float, _Slot]] = []
        self._since: dict[int, float] = {}

    @property
    def busy(self) -> bool:
        return bool(self._pending or self._later)

    def is_pinging(self, slot: _Slot) -> bool:
        return id(slot) in self._since

    def ping(self, slot: _Slot) -> None:
        self._since.setdefault(id(slot), time.monotonic())
        self._pending[slot.handle.ready.remote()] = slot

    def wait(self, running: list[Any], idle: collections.deque[_Slot],
             max_timeout: float | None = None) -> Any | None:
        """Wait for one call; settle it if it is a ping (return None), else return its ref.

        ``max_timeout`` caps the wait (None: until a call or a ping is due).
        """
        now = time.monotonic()
        for due, slot in [item for item in self._later if item[0] <= now]:
            self._later.remove((due, slot))
            self._pending[slot.handle.ready.remote()] = slot
        refs = running + list(self._pending)
        timeout = None if running else _START_LOG_S
        if self._later:
            timeout = max(0.0, min(due for due, _ in self._later) - time.monotonic())
        if max_timeout is not None:
            timeout = max_timeout if timeout is None else min(timeout, max_timeout)
        if not refs:
            time.sleep(timeout or 0.0)
            return None
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            if not running and not self._later and max_timeout is None:
                self._pool._log(f"waiting for {len(self._pending)} restarting evaluator actors "
                                f"(cluster has {ray.available_resources()} free)")
            return None
        ref = ready[0]
        slot = self._pending.pop(ref, None)
        if slot is None:
            return ref
        try:
            ray.get(ref)
        except ActorUnavailableError as exc:
            if time.monotonic() - self._since.get(id(slot), now) < _RESTART_PATIENCE_S:
                self._later.append((time.monotonic() + _PING_INTERVAL_S, slot))
            else:
                self._fresh(slot, exc)
        except RayError as exc:
            self._fresh(slot, exc)
        else:
            self._since.pop(id(slot), None)
            slot.failures = 0
            idle.append(slot)
        return None

    def _fresh(self, slot: _Slot, exc: BaseException) -> None:
        self._since.pop(id(slot), None)
        fresh = self._pool._replace(slot, exc)
        if fresh is not None:
            self.ping(fresh)


def _pick(idle: collections.deque[_Slot], job: PoolJob) -> _Slot:
    """The first idle slot the job has not failed on yet (any idle slot if it tried them all)."""
    for slot in idle:
        if slot.index not in job.tried_on:
            idle.remove(slot)
            return slot
    return idle.popleft()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # Ray's messages run to many lines; the first non-empty one names the cause.
    first = next((line.strip() for line in text if line.strip()), "")
    return f"{type(exc).__name__}: {first}"[:300]
