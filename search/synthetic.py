"""The fixed synthetic pruning problem, as pure numpy (no pymoo).

ResNet-56-shaped: 30 integer genes (27 block widths in 1..16 granules, 3 stage widths in 2..16).
"Fixed here so that nobody tunes it": do not change the constants.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LOWER", "UPPER", "synthetic_error", "synthetic_cheap", "synthetic_hv_ref"]

N_GENES = 30
FULL_WIDTH = np.full(N_GENES, 16.0)
SENSITIVITY = np.random.default_rng(2024).lognormal(-1.2, 0.8, N_GENES) * 0.02
SENSITIVITY[27:30] *= 5.0
LATENCY_COEF = np.random.default_rng(2025).uniform(0.5, 2.0, N_GENES)
MEMORY_COEF = np.random.default_rng(2026).uniform(0.2, 3.0, N_GENES)
LOWER = np.array([1] * 27 + [2] * 3)
UPPER = np.full(N_GENES, 16)


def synthetic_error(genome: Sequence[int], *, noise: bool = True) -> float:
    """Error of one genome; the Gaussian noise (sd 0.002) is seeded by the genome itself."""
    w = np.asarray(genome, dtype=float) / FULL_WIDTH
    error = 0.07 + float(np.sum(SENSITIVITY * (1.0 - w) ** 2))
    error += 0.5 * float(np.sum(np.maximum(0.0, 0.25 - w) ** 2))
    if noise:
        key = tuple(int(g) for g in genome)
        error += float(np.random.default_rng(hash(key) % 2**32).normal(0.0, 0.002))
    return error


def synthetic_cheap(X: np.ndarray) -> np.ndarray:
    """(n, 2) latency and memory of integer genomes ``X`` (n, 30)."""
    X = np.atleast_2d(np.asarray(X, dtype=float))
    latency = np.sum(LATENCY_COEF * np.ceil(X / 2.0) * 2.0 / FULL_WIDTH, axis=1)
    memory = np.sum(MEMORY_COEF * X / FULL_WIDTH, axis=1)
    return np.column_stack([latency, memory])


def synthetic_hv_ref() -> np.ndarray:
    """Reference point: error 0.30 and the full-width genome's latency and memory."""
    return np.concatenate([[0.30], synthetic_cheap(UPPER[None, :])[0]])
