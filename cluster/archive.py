"""The driver's in-memory archive: every journaled candidate, by id and by genome, and the
current Pareto front (kept incrementally: re-reading the journal each generation is O(n^2))."""

from __future__ import annotations

from typing import Any

import numpy as np

from prunesearch.cluster.report import objectives_of
from prunesearch.methods.errors import RunStateError

__all__ = ["Archive"]


class Archive:
    """Journaled candidates and the front of the ok ones (all objectives minimised).

    Attributes:
        by_id: candidate id -> journal record.
        known: genome -> candidate id (answers a genome asked again).
        front: candidate id -> objective vector of the current non-dominated records.
    """

    def __init__(self) -> None:
        self.by_id: dict[int, dict[str, Any]] = {}
        self.known: dict[tuple[int, ...], int] = {}
        self.front: dict[int, np.ndarray] = {}
        self._front_matrix: np.ndarray | None = None  # the front's rows, in dict order

    @property
    def evaluations(self) -> int:
        """Journaled candidates."""
        return len(self.by_id)

    @property
    def failed(self) -> int:
        """Journaled candidates whose status is not ok."""
        return sum(1 for r in self.by_id.values() if r["status"] != "ok")

    def add(self, record: dict[str, Any]) -> bool:
        """Add a journaled record; return True if it joined the front.

        Raises:
            RunStateError: the id is already in the archive (a damaged journal).
        """
        cid = int(record["id"])
        if cid in self.by_id:
            raise RunStateError(f"journal holds candidate {cid} twice")
        self.by_id[cid] = record
        self.known[tuple(int(g) for g in record["genome"])] = cid
        f = objectives_of(record)
        if f is None:
            return False
        return self._front_add(cid, f)

    def _matrix(self) -> np.ndarray:
        # One array for the whole front (a search's front holds hundreds of members, and a
        # member-by-member loop cost the driver milliseconds per result at 64 results/s).
        G = self._front_matrix
        if G is None or len(G) != len(self.front):
            values = list(self.front.values())
            G = np.vstack(values) if values else np.empty((0, 0))
            self._front_matrix = G
        return G

    def dominated(self, f: np.ndarray) -> bool:
        """Whether a front member dominates objective vector ``f``."""
        G = self._matrix()
        if len(G) == 0:
            return False
        f = np.asarray(f, dtype=float)
        return bool(np.any(np.all(G <= f, axis=1) & np.any(G < f, axis=1)))

    def _front_add(self, cid: int, f: np.ndarray) -> bool:
        if self.dominated(f):
            return False
        G = self._matrix()
        if len(G):
            beaten = np.all(f <= G, axis=1) & np.any(f < G, axis=1)
            for other_id in [i for i, out in zip(self.front, beaten) if out]:
                del self.front[other_id]
            G = G[~beaten]
        self.front[cid] = f
        row = np.asarray(f, dtype=float).reshape(1, -1)
        self._front_matrix = np.vstack([G, row]) if len(G) else row
        return True
