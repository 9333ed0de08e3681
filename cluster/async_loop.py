"""The asynchronous search loop (``search.mode: async``): no generational barrier.

The generational loop waits for the slowest candidate of every batch; with uneven evaluation
times (a wide candidate fine-tunes several times longer than a narrow one, nodes differ) and a
population the size of the pool, that barrier idles a third of the cluster. Here:

* **A queue of asked candidates** is kept at ``slots + ask_size`` (``slots`` = the pool size at
  the start of the run; until the initial population is told, ``slots``: one filler per free
  evaluator, ``SteadyState.queue_extra``): whenever told results lower it, the algorithm is
  asked for another
  group (:class:`~prunesearch.search.steady_state.SteadyState`: ``ask_size`` offspring, HAMP's
  surrogate-ranked local-search moves among them), so one ask (~0.1-0.15 s for HAMP) is
  amortised over a group. Genomes are deduplicated against everything asked before (journaled
  or in flight).
* **Dispatch** runs in a thread of its own (:meth:`EvaluatorPool.serve`): an evaluator that
  finishes gets the next queued candidate at once, whatever the main thread is computing. Ask
  groups are served in order; inside a group the longest expected cost goes first (the task's
  analytic MACs, known before evaluating), so the long candidates start first and the short
  ones fill in (:class:`~prunesearch.cluster.actors.JobFeed`). At most one
  candidate per live actor is in flight; a candidate whose actor is lost goes back first in line.
* **Tells.** The main thread takes every result that has arrived (one or more), journals each
  line with ``tell`` = the index of the group it is told in, then tells the group: the archive,
  the surrogate's training set and the portfolio credit update at once.
* **Checkpoints** (sealed, atomic, :mod:`~prunesearch.cluster.checkpoint`) hold the algorithm,
  its RNG and the candidates outstanding; one is written before anything is dispatched and then
  every ``search.async_checkpoint_s`` seconds after a tell.

**Exact resume.** Decisions depend on the order and grouping in which results are told, and
everything between two tells is a deterministic function of that history (asks happen only
after tells, by a rule that counts candidates). Resume loads the checkpoint, replays the
journaled groups it does not hold yet in their journaled order (each tell followed by the same
asks, which must give the journaled genomes the same ids: checked), then re-submits whatever
was asked and not journaled. With a deterministic evaluator, a resumed search ends exactly as an
uninterrupted search told in the same order (``PRUNESEARCH_TEST_TELL_ORDER`` forces an order,
for that test).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prunesearch.cluster.actors import JobFeed, PoolJob
from prunesearch.cluster.batch_plan import set_objectives
from prunesearch.cluster.checkpoint import AsyncState
from prunesearch.cluster.report import write_summary
from prunesearch.cluster.run_store import search_summary
from prunesearch.methods.errors import RunStateError
from prunesearch.methods.task import candidate_seed, failed_result
from prunesearch.search.steady_state import SteadyState, default_ask_size, population_of

if TYPE_CHECKING:  # the driver imports this module
    from prunesearch.cluster.driver import _Driver

__all__ = ["TELL_ORDER_ENV", "AsyncLoop"]

#: Test hook: a JSON file holding a list of tell groups (lists of candidate ids); the loop holds
#: arrived results back and tells them in exactly that order (then as they come). Unset in use.
TELL_ORDER_ENV = "PRUNESEARCH_TEST_TELL_ORDER"
#: Asks in a row that propose nothing new before the search stops (the space is exhausted).
_MAX_EMPTY_ASKS = 25


class AsyncLoop:
    """Runs the asynchronous search of one driver (its archive, journal, pool, state)."""

    def __init__(self, driver: _Driver) -> None:
        self.d = driver
        state = driver.state
        if state.async_state is None:
            slots = int(driver.config.cluster.num_evaluators)
            ask_size = driver.config.search.async_ask_size or default_ask_size(slots)
            state.async_state = AsyncState(
                steady=SteadyState(state.algorithm, ask_size=int(ask_size),
                                   queue_margin=driver.config.search.async_queue_margin,
                                   adaptive_margin=driver.config.search.async_adaptive_margin),
                slots=slots)
        self.a: AsyncState = state.async_state
        self.pop_size = max(1, int(driver.config.search.pop_size))
        self.checkpoint_s = float(driver.config.search.async_checkpoint_s)
        self.feed = JobFeed()
        self.arrivals: queue.Queue[Any] = queue.Queue()
        self.stop = threading.Event()
        self.forced = _forced_order()
        self._held: dict[int, tuple[PoolJob, dict[str, Any]]] = {}
        self._groups = 0  # groups queued in the feed

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> bool:
        """Candidates remain to evaluate."""
        return bool(self.a.outstanding)

    def _limit(self) -> int:
        return self.d.budget - self.a.told - len(self.a.outstanding)

    def prepare(self) -> None:
        """Replay journaled tells the checkpoint does not hold, refill, checkpoint."""
        d, a = self.d, self.a
        if d.state.finished:
            return
        self._replay()
        self._refill()
        if not a.outstanding:
            self._finish()
        d._save_state()

    def _replay(self) -> None:
        d, a = self.d, self.a
        groups: dict[int, list[int]] = {}
        for cid, record in d.by_id.items():
            tell = record.get("tell")
            if tell is None:
                raise RunStateError(f"journal line of candidate {cid} has no 'tell' field: it "
                                    "was not written by an asynchronous search")
            if int(tell) >= a.tell_groups:
                groups.setdefault(int(tell), []).append(cid)
        if not groups:
            return
        replayed = 0
        for tell in sorted(groups):
            ids = groups[tell]  # journal order within the group (dicts keep insertion order)
            missing = [cid for cid in ids if cid not in a.outstanding]
            if missing:
                raise RunStateError(f"journal holds candidates {missing[:5]} (tell {tell}) that "
                                    "the checkpoint's replay never asked: journal and state do "
                                    "not match")
            a.tell_groups = tell
            self._tell(ids)
            self._refill()
            replayed += len(ids)
        d.log(f"replayed {replayed} journaled results in {len(groups)} tells, in their "
              "journaled order")

    def _refill(self) -> list[int]:
        """Ask groups until ``slots + queue_extra`` candidates are outstanding (or the budget or
        the algorithm runs out); returns the new candidate ids."""
        d, a = self.d, self.a
        task = d.task
        new: list[int] = []
        target = a.slots + a.steady.queue_extra
        while not a.exhausted and len(a.outstanding) < target:
            limit = self._limit()
            if limit <= 0:
                break
            pop = a.steady.ask(limit, exclude=a.seen)
            if len(pop) == 0:
                a.empty_asks += 1
                if a.empty_asks >= _MAX_EMPTY_ASKS:
                    d.log(f"stopping: {a.empty_asks} asks in a row proposed only genomes "
                          "already asked")
                    a.exhausted = True
                if a.outstanding:
                    break  # ask again after the next tell
                continue
            a.empty_asks = 0
            X = np.asarray(pop.get("X"), dtype=float)
            genomes = np.clip(np.rint(X), task.lower, task.upper).astype(int)
            pop.set("X", genomes)
            for ind, row in zip(pop, genomes):
                genome = tuple(int(g) for g in row)
                cid = d.state.next_id
                d.state.next_id += 1
                journaled = d.by_id.get(cid)
                if journaled is not None and tuple(journaled["genome"]) != genome:
                    raise RunStateError(
                        f"replaying the journal asked genome {list(genome)} as candidate {cid}, "
                        f"but the journal holds {journaled['genome']}: the checkpoint and the "
                        "journal do not belong to the same search")
                a.outstanding[cid] = (genome, ind)
                a.seen.add(genome)
                new.append(cid)
        return new

    def _tell(self, ids: list[int]) -> None:
        a = self.a
        pop = population_of([a.outstanding[cid][1] for cid in ids])
        set_objectives(pop, ids, self.d.by_id, self.d.failed_F)
        a.steady.tell(pop)
        for cid in ids:
            del a.outstanding[cid]
        a.told += len(ids)
        a.tell_groups += 1
        self.d.state.generation = a.told // self.pop_size

    def _finish(self) -> None:
        self.a.steady.flush()
        self.d.state.finished = True

    # ------------------------------------------------------------------ live loop
    def _submit(self, ids: list[int]) -> None:
        """Queue candidates as one group: after the groups queued before, longest MACs first."""
        d = self.d
        if not ids:
            return
        self._groups += 1
        for cid in ids:
            genome = self.a.outstanding[cid][0]
            cost = float(d.task.cheap_metrics(list(genome)).get("macs") or 0.0)
            self.feed.put(PoolJob(candidate_id=cid, genome=genome,
                                  seed=candidate_seed(d.config.seed, cid)), cost,
                          group=self._groups)

    def _serve(self) -> None:
        try:
            self.d.pool.serve(self.feed, lambda job, result: self.arrivals.put((job, result)),
                              failed_result=failed_result, stop=self.stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            self.arrivals.put(exc)

    def _get(self, block: bool) -> tuple[PoolJob, dict[str, Any]] | None:
        while True:
            try:
                item = self.arrivals.get(timeout=0.5) if block else self.arrivals.get_nowait()
            except queue.Empty:
                if block:
                    continue
                return None
            if isinstance(item, BaseException):
                raise item
            return item

    def _collect(self) -> list[tuple[PoolJob, dict[str, Any]]]:
        """The next group to tell: everything arrived (at least one), or the forced group."""
        index = self.a.tell_groups
        if self.forced is not None and index < len(self.forced):
            wanted = self.forced[index]
            while not all(cid in self._held for cid in wanted):
                job, result = self._get(block=True)
                self._held[job.candidate_id] = (job, result)
            return [self._held.pop(cid) for cid in wanted]
        if self._held:  # a forced order ran out: what it held back comes first
            group, self._held = list(self._held.values()), {}
        else:
            group = [self._get(block=True)]
        while (item := self._get(block=False)) is not None:
            group.append(item)
        return group

    def run(self) -> None:
        """Evaluate until the budget is spent (or the algorithm has nothing new to propose)."""
        d, a = self.d, self.a
        if d.state.finished:
            return
        self._submit(list(a.outstanding))
        thread = threading.Thread(target=self._serve, name="prunesearch-dispatch", daemon=True)
        thread.start()
        last_checkpoint = time.perf_counter()
        last_progress = (time.perf_counter(), a.told)
        try:
            while a.outstanding:
                group = self._collect()
                tell = a.tell_groups
                generation = a.told // self.pop_size
                for job, result in group:
                    d._on_result(job, result, generation, extra={"tell": tell})
                self._tell([job.candidate_id for job, _ in group])
                self._submit(self._refill())
                now = time.perf_counter()
                if not a.outstanding:
                    break
                if now - last_checkpoint >= self.checkpoint_s:
                    d._save_state()
                    last_checkpoint = now
                if a.told - last_progress[1] >= self.pop_size:
                    self._progress(a.told - last_progress[1], now - last_progress[0])
                    last_progress = (now, a.told)
        finally:
            self.stop.set()
            thread.join(timeout=10)
            if d.pool is not None:
                d.log(f"dispatch: at most {d.pool.max_in_flight} in flight on {d.pool.size} "
                      f"evaluators ({d.pool.deaths} actor deaths)")
        self._finish()
        d._save_state()
        d.models.prune(d.front)
        self._progress(a.told - last_progress[1], time.perf_counter() - last_progress[0])

    def _progress(self, new: int, elapsed: float) -> None:
        d = self.d
        d.models.prune(d.front)
        hv = d._progress(new, elapsed)
        summary = search_summary(d.meta, status="running", evaluations=d.evaluations,
                                 failed=d.failed, hypervolume=hv, wall_s=d._wall_s(),
                                 generations=d.state.generation, front_size=len(d.front))
        write_summary(d.run_dir, summary)
        d._mirror()


def _forced_order() -> list[list[int]] | None:
    path = os.environ.get(TELL_ORDER_ENV)
    if not path:
        return None
    groups = json.loads(Path(path).read_text())
    return [[int(c) for c in group] for group in groups]
