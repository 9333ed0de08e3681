"""How one asked batch is answered: candidate ids, known genomes, the budget cut, and the
objectives told back.

:func:`plan_batch` is a pure function of the asked genomes and the archive, and
:func:`tell_batch` tells in candidate-id order whatever order results arrived in, so a resumed
driver answers a batch exactly as the uninterrupted one did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from prunesearch.cluster.report import objectives_of
from prunesearch.search.base import mark_failed

__all__ = ["BatchPlan", "plan_batch", "set_objectives", "tell_batch"]


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How one asked batch is answered.

    Attributes:
        keep: indices of the asked individuals that are told back (the tail beyond the budget
            is dropped).
        ids: for each kept individual, the candidate id that answers it (an earlier candidate
            for a known genome, a new id otherwise).
        new: (candidate id, genome) of the genomes to evaluate, in id order.
    """

    keep: tuple[int, ...]
    ids: tuple[int, ...]
    new: tuple[tuple[int, tuple[int, ...]], ...]


def plan_batch(genomes: Sequence[Sequence[int]], known: Mapping[tuple[int, ...], int], *,
               next_id: int, remaining: int) -> BatchPlan:
    """Assign candidate ids to an asked batch, answering known genomes from the archive.

    Args:
        genomes: the batch in asked order.
        known: genome -> candidate id of every journaled candidate.
        next_id: the first unused candidate id.
        remaining: evaluations left in the budget; new genomes beyond it are dropped.

    Returns:
        The plan; a genome repeated inside the batch is evaluated once and answers both.
    """
    if remaining < 0:
        raise ValueError(f"remaining must be >= 0, got {remaining!r}")
    keep: list[int] = []
    ids: list[int] = []
    new: list[tuple[int, tuple[int, ...]]] = []
    fresh: dict[tuple[int, ...], int] = {}
    for index, genome in enumerate(genomes):
        key = tuple(int(g) for g in genome)
        if key in known:
            cid = known[key]
        elif key in fresh:
            cid = fresh[key]
        elif len(new) < remaining:
            cid = next_id + len(new)
            fresh[key] = cid
            new.append((cid, key))
        else:
            continue
        keep.append(index)
        ids.append(cid)
    return BatchPlan(keep=tuple(keep), ids=tuple(ids), new=tuple(new))


def tell_batch(algorithm: Any, pop: Any, ids: Sequence[int],
               records: Mapping[int, Mapping[str, Any]], failed_F: np.ndarray) -> None:
    """Tell ``algorithm`` the objectives of an asked (and planned) population.

    Args:
        algorithm: the pymoo algorithm that asked ``pop``.
        pop: the kept individuals of the asked population (``plan.keep``).
        ids: the candidate id answering each of them (``plan.ids``).
        records: journal records by candidate id (each id must be there).
        failed_F: the objectives told for a failed candidate.
    """
    set_objectives(pop, ids, records, failed_F)
    algorithm.tell(infills=pop)


def set_objectives(pop: Any, ids: Sequence[int], records: Mapping[int, Mapping[str, Any]],
                   failed_F: np.ndarray) -> Any:
    """Write the journaled objectives into the asked individuals ``pop`` (one id each),
    marking failed candidates (infeasible, never selected); returns ``pop``."""
    F = np.empty((len(ids), 3))
    failed = np.zeros(len(ids), dtype=bool)
    for row, cid in enumerate(ids):
        f = objectives_of(records[cid])
        if f is None:
            F[row], failed[row] = failed_F, True
        else:
            F[row] = f
    empty = np.zeros((len(pop), 0))
    pop.set("F", F, "G", empty, "H", empty)
    for ind in pop:
        ind.CV = np.array([0.0])
        ind.evaluated.update({"F", "G", "H"})
    # The search layer's convention: failed candidates are infeasible, archived (never
    # proposed again) and never selected.
    mark_failed(pop, failed)
    return pop
