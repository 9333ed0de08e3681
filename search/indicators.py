"""Hypervolume with the normalisation fixed in ARCHITECTURE.md (pymoo's HV underneath)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

__all__ = [
    "comparison_hypervolumes",
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


def comparison_hypervolumes(
    fronts: Sequence[np.ndarray], *, ref: Sequence[float] | None = None
) -> list[float]:
    """Hypervolumes of several fronts of one problem, made comparable (ARCHITECTURE.md).

    With a reference point (a problem's ``hv_ref``, in raw objective units) every front is divided
    by it, so the reference becomes 1.0 on every axis. Without one, all fronts are normalised by
    the ideal and nadir of the non-dominated union of all fronts given and measured against 1.1 on
    every axis, so the values are comparable with each other only, never across calls.

    Args:
        fronts: One (n_i, n_obj) array per front (feasible points only; empty fronts allowed).
        ref: Optional raw reference point (all entries > 0).

    Returns:
        One hypervolume per front, in the order given.
    """
    arrays = []
    for F in fronts:
        F = np.asarray(F, dtype=float)
        F = F.reshape(0, 1) if F.size == 0 else np.atleast_2d(F)
        arrays.append(F[np.all(np.isfinite(F), axis=1)])
    if ref is not None:
        ref = np.asarray(ref, dtype=float)
        if np.any(ref <= 0):
            raise ValueError(f"ref must be positive on every axis to normalise by it, got {ref}")
        return [hypervolume(F / ref, np.ones(len(ref))) for F in arrays]
    nonempty = [F for F in arrays if len(F)]
    if not nonempty:
        return [0.0 for _ in arrays]
    union = np.vstack(nonempty)
    union = union[non_dominated(union)]
    ideal, nadir = union.min(axis=0), union.max(axis=0)
    scale = np.where(nadir - ideal > 0, nadir - ideal, 1.0)
    n_obj = union.shape[1]
    return [hypervolume((F - ideal) / scale, np.full(n_obj, 1.1)) if len(F) else 0.0
            for F in arrays]
