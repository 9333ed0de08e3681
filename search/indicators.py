"""Hypervolume with the project's fixed normalisation (pymoo's HV underneath)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

__all__ = [
    "comparison_hypervolumes",
    "comparison_normalizer",
    "hv_contributions",
    "hypervolume",
    "non_dominated",
    "normalize_objectives",
    "normalized_hypervolume",
]


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of ``F`` (minimisation)."""
    F = np.asarray(F, dtype=float)
    if len(F) == 0:
        return np.zeros(0, dtype=int)
    return np.asarray(NonDominatedSorting().do(F, only_non_dominated_front=True), dtype=int)


def hypervolume(F: np.ndarray, ref: Sequence[float]) -> float:
    """Hypervolume of ``F`` w.r.t. reference point ``ref`` (points beyond it contribute 0)."""
    F = np.asarray(F, dtype=float)
    ref = np.asarray(ref, dtype=float)
    if len(F) == 0:
        return 0.0
    F = F[np.all(F < ref, axis=1)]
    if len(F) == 0:
        return 0.0
    return float(HV(ref_point=ref)(F))


def hv_contributions(F: np.ndarray, ref: Sequence[float],
                     rows: Sequence[int] | None = None) -> np.ndarray:
    """Exclusive hypervolume contribution of each row of ``F`` (a non-dominated set inside
    ``ref``): the hypervolume lost when that row alone is removed.

    Args:
        rows: only these rows' contributions are computed (the others are 0 in the result):
            one hypervolume per row asked, not per row of ``F``.
    """
    F = np.asarray(F, dtype=float)
    out = np.zeros(len(F))
    wanted = range(len(F)) if rows is None else sorted({int(i) for i in rows})
    if not len(wanted):
        return out
    total = hypervolume(F, ref)
    for i in wanted:
        out[i] = total - hypervolume(np.delete(F, i, axis=0), ref)
    return out


def normalize_objectives(
    F: np.ndarray, dense: Mapping[str, float], max_error_increase: float = 0.10
) -> np.ndarray:
    """Normalise (error, latency_ms, memory_mb) columns by the dense model.

    Error maps to ``error / (dense_error + max_error_increase)``; latency and memory are divided
    by the dense model's. The reference point is then 1.0 on every axis.
    """
    F = np.atleast_2d(np.asarray(F, dtype=float))
    scale = [dense["error"] + max_error_increase, dense["latency_ms"], dense["memory_mb"]]
    return F / np.asarray(scale[: F.shape[1]], dtype=float)


def normalized_hypervolume(
    F: np.ndarray, dense: Mapping[str, float], max_error_increase: float = 0.10
) -> float:
    """Hypervolume of raw objectives ``F`` normalised by the dense model, reference 1.0."""
    Fn = normalize_objectives(F, dense, max_error_increase)
    return hypervolume(Fn, np.ones(Fn.shape[1]))


def comparison_normalizer(
    fronts: Sequence[np.ndarray], *, ref: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(shift, scale, ref)`` that make hypervolumes of ``fronts`` comparable.

    With a raw reference point (a problem's ``hv_ref``): no shift, divide by it, reference 1.0.
    Without: the ideal and nadir of the union of all (finite) points of all fronts given, mapped
    to 0 and 1, reference 1.1 on every axis. The nadir is taken over every point of every front,
    not only over the union's non-dominated set: with few evaluations (ZDT2 at 400) the union's
    own front can shrink to a corner and leave every other front beyond the reference point.
    """
    arrays = [_as_front(F) for F in fronts]
    if ref is not None:
        ref = np.asarray(ref, dtype=float)
        if np.any(ref <= 0):
            raise ValueError(f"ref must be positive on every axis to normalise by it, got {ref}")
        return np.zeros(len(ref)), ref, np.ones(len(ref))
    nonempty = [F for F in arrays if len(F)]
    if not nonempty:
        raise ValueError("fronts are all empty and no ref is given: nothing to normalise by")
    union = np.vstack(nonempty)
    ideal, nadir = union.min(axis=0), union.max(axis=0)
    scale = np.where(nadir - ideal > 0, nadir - ideal, 1.0)
    return ideal, scale, np.full(union.shape[1], 1.1)


def _as_front(F: np.ndarray) -> np.ndarray:
    F = np.asarray(F, dtype=float)
    F = F.reshape(0, 1) if F.size == 0 else np.atleast_2d(F)
    return F[np.all(np.isfinite(F), axis=1)]


def comparison_hypervolumes(
    fronts: Sequence[np.ndarray], *, ref: Sequence[float] | None = None
) -> list[float]:
    """Hypervolumes of several fronts of one problem, made comparable (docs/METHODS.md).

    A problem without a dense model declares its own reference point (``hv_ref``, raw units):
    fronts are divided by it and measured against 1.0. Where it has none, all fronts are
    normalised together by :func:`comparison_normalizer` and measured against 1.1 on every axis;
    such values compare with each other only, never across calls.

    Args:
        fronts: One (n_i, n_obj) array per front (feasible points only; empty fronts allowed).
        ref: Optional raw reference point (all entries > 0).

    Returns:
        One hypervolume per front, in the order given.
    """
    arrays = [_as_front(F) for F in fronts]
    if ref is None and not any(len(F) for F in arrays):
        return [0.0 for _ in arrays]
    shift, scale, ref_n = comparison_normalizer(arrays, ref=ref)
    return [hypervolume((F - shift) / scale, ref_n) if len(F) else 0.0 for F in arrays]
