"""Neighbour moves and hypervolume-improvement ranking for HAMP's surrogate-assisted local search.

Moves (issue 4): on integer genes, one gene one step up or down, or one step moved from one gene
to another (a *transfer*: the total stays, the distribution changes); on real genes, a Gaussian
step of ``step_fraction`` of the variable's range on one or two genes.

Ranking works in a normalised objective space with a reference point (see
:func:`prunesearch.search.hamp.HAMP`): a candidate's score is its hypervolume improvement (HVI)
over the current front; a candidate with none scores minus its distance to the front (how far it
would have to move to stop being dominated), so that, when nothing is predicted to improve, the
nearest misses are still tried first. The batch is filled greedily: after each pick the pick's
predicted point joins the front (a "believer" update), so the next pick has to improve a
*different* part of it. Because HVI only shrinks as the front grows, the greedy loop re-scores
lazily, which keeps it exact and cheap.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np
from moocore import hypervolume as _moocore_hv

__all__ = ["domination_depth", "greedy_select", "hv_improvements", "neighbour_moves"]


def neighbour_moves(
    parent: np.ndarray,
    *,
    xl: np.ndarray,
    xu: np.ndarray,
    integer: bool,
    n_samples: int,
    rng: np.random.Generator,
    step_fraction: float = 0.05,
) -> np.ndarray:
    """Sample up to ``n_samples`` distinct neighbours of ``parent`` inside the bounds.

    Args:
        parent: Genome (n_var,).
        xl: Lower bounds.
        xu: Upper bounds.
        integer: Integer genes (step moves and transfers) or real genes (Gaussian steps).
        n_samples: How many neighbours to return at most (fewer if the neighbourhood is small).
        rng: Random generator (the algorithm's).
        step_fraction: Real genes: standard deviation of a step, as a fraction of the range.

    Returns:
        Array (m, n_var), m <= n_samples, without duplicates and without ``parent`` itself.
    """
    parent = np.asarray(parent, dtype=float)
    n_var = len(parent)
    xl = np.asarray(xl, dtype=float)
    xu = np.asarray(xu, dtype=float)
    n_draw = 3 * n_samples + 8
    moves = np.repeat(parent[None, :], n_draw, axis=0)
    rows = np.arange(n_draw)
    first = rng.integers(0, n_var, n_draw)
    # A second, different gene for the two-gene moves.
    second = (first + rng.integers(1, max(n_var, 2), n_draw)) % n_var
    two_genes = (rng.random(n_draw) < 0.5) & (n_var > 1)
    if integer:
        sign = rng.choice(np.array([-1.0, 1.0]), n_draw)
        moves[rows, first] += sign
        # Transfer: the step taken from the first gene is given to the second.
        moves[rows[two_genes], second[two_genes]] -= sign[two_genes]
        valid = np.all((moves >= xl) & (moves <= xu), axis=1)
    else:
        scale = step_fraction * (xu - xl)
        moves[rows, first] += rng.normal(0.0, 1.0, n_draw) * scale[first]
        extra = rng.normal(0.0, 1.0, n_draw) * scale[second]
        moves[rows[two_genes], second[two_genes]] += extra[two_genes]
        moves = np.clip(moves, xl, xu)
        valid = np.ones(n_draw, dtype=bool)
    valid &= np.any(moves != parent, axis=1)
    moves = moves[valid]
    # Keep the first occurrence of each neighbour, in draw order (deterministic for a given rng).
    _, first_index = np.unique(moves, axis=0, return_index=True)
    return moves[np.sort(first_index)][:n_samples]


def domination_depth(C: np.ndarray, front: np.ndarray) -> np.ndarray:
    """How far each row of ``C`` lies behind ``front``: > 0 when strictly dominated.

    ``depth(c) = max_p min_k (c_k - p_k)``: the smallest uniform improvement of c that leaves no
    point of ``front`` strictly better on every objective.
    """
    C = np.atleast_2d(C)
    if len(front) == 0:
        return np.full(len(C), -np.inf)
    depth = np.full(len(C), -np.inf)
    # Chunks bound the (m, k, d) temporary for large candidate sets.
    for start in range(0, len(C), 512):
        chunk = C[start:start + 512]
        depth[start:start + 512] = np.max(
            np.min(chunk[:, None, :] - front[None, :, :], axis=2), axis=1)
    return depth


def _hv(F: np.ndarray, ref: np.ndarray) -> float:
    F = F[np.all(F < ref, axis=1)]
    return float(_moocore_hv(F, ref=ref)) if len(F) else 0.0


def hv_improvements(C: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Hypervolume improvement of adding each row of ``C`` (alone) to ``front``.

    All arrays are in the same (normalised, minimised) objective space; points beyond ``ref``
    contribute nothing.
    """
    C = np.atleast_2d(np.asarray(C, dtype=float))
    front = np.asarray(front, dtype=float).reshape(-1, C.shape[1])
    front = front[np.all(front < ref, axis=1)]
    base = _hv(front, ref)
    hvi = np.zeros(len(C))
    candidates = np.all(C < ref, axis=1) & (domination_depth(C, front) < 0)
    for i in np.flatnonzero(candidates):
        hvi[i] = max(0.0, _hv(np.vstack([front, C[i]]), ref) - base)
    return hvi


def _fallback_score(C: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Negative score of candidates that improve nothing: minus their distance to the front."""
    depth = np.maximum(domination_depth(C, front), 0.0)
    beyond = np.maximum(np.max(C - ref, axis=1), 0.0)
    return -(depth + beyond) - 1e-12


def greedy_select(
    predicted: np.ndarray,
    front: np.ndarray,
    ref: np.ndarray,
    *,
    groups: np.ndarray,
    per_group: int,
    total: int,
    score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> list[int]:
    """Pick up to ``total`` candidates (at most ``per_group`` per group) by greedy HVI.

    Args:
        predicted: Predicted (normalised) objectives of the candidates (m, n_obj).
        front: Current (normalised) front.
        ref: Reference point.
        groups: Group (parent) id of each candidate.
        per_group: Cap per group.
        total: Overall cap.
        score_fn: Optional ``(indices, front) -> scores`` replacing the plain HVI of the
            predicted points (HAMP passes expected HVI when the surrogate gives uncertainty).

    Returns:
        Indices into ``predicted``, best first.
    """
    predicted = np.asarray(predicted, dtype=float)
    front = np.asarray(front, dtype=float).reshape(-1, predicted.shape[1])
    if len(predicted) == 0 or total <= 0 or per_group <= 0:
        return []

    def score(idx: np.ndarray, current: np.ndarray) -> np.ndarray:
        s = (score_fn(idx, current) if score_fn is not None
             else hv_improvements(predicted[idx], current, ref))
        fallback = _fallback_score(predicted[idx], current, ref)
        return np.where(s > 0, s, fallback)

    all_idx = np.arange(len(predicted))
    scores = score(all_idx, front)
    version = 0
    # Heap of (-score, index, front version the score was computed against).
    heap = [(-float(s), int(i), version) for i, s in zip(all_idx, scores)]
    heapq.heapify(heap)
    taken: list[int] = []
    per_group_count: dict[int, int] = {}
    while heap and len(taken) < total:
        neg, i, seen = heapq.heappop(heap)
        g = int(groups[i])
        if per_group_count.get(g, 0) >= per_group:
            continue
        if seen != version and -neg > 0:
            # Stale upper bound: re-score against the grown front and try again.
            fresh = float(score(np.array([i]), front)[0])
            heapq.heappush(heap, (-fresh, i, version))
            continue
        taken.append(i)
        per_group_count[g] = per_group_count.get(g, 0) + 1
        if -neg > 0:
            front = np.vstack([front, predicted[i]])
            version += 1
    return taken
