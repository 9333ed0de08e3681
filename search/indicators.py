"""Hypervolume with the normalisation fixed in ARCHITECTURE.md (pymoo's HV underneath)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

__all__ = ["hypervolume", "normalize_objectives", "normalized_hypervolume", "non_dominated"]


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
