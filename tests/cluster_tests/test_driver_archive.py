"""The driver's archive keeps the front of the ok records as results arrive."""

from __future__ import annotations

import numpy as np

from prunesearch.cluster.archive import Archive
from prunesearch.cluster.journal import OBJECTIVE_NAMES


def _record(cid: int, f: np.ndarray | None) -> dict:
    if f is None:
        return {"id": cid, "genome": [cid], "status": "failed"}
    return {"id": cid, "genome": [cid], "status": "ok",
            "objectives": dict(zip(OBJECTIVE_NAMES, map(float, f)))}


def _brute_front(points: dict[int, np.ndarray]) -> list[int]:
    return [i for i, f in points.items()
            if not any(np.all(g <= f) and np.any(g < f) for g in points.values())]


def test_front_equals_the_brute_force_front_after_every_record() -> None:
    rng = np.random.default_rng(0)
    archive = Archive()
    ok: dict[int, np.ndarray] = {}
    for cid in range(300):
        f = None if rng.random() < 0.1 else rng.integers(0, 8, 3).astype(float)  # ties too
        joined = archive.add(_record(cid, f))
        if f is not None:
            ok[cid] = f
        front = _brute_front(ok)
        assert list(archive.front) == front  # same members, in arrival order
        assert joined == (cid in front)
        probe = rng.integers(0, 8, 3).astype(float)
        assert archive.dominated(probe) == any(
            np.all(g <= probe) and np.any(g < probe) for g in (ok[i] for i in front))
    assert archive.evaluations == 300 and 0 < archive.failed < 60
