"""Neighbour moves and hypervolume-improvement ranking for HAMP's surrogate-assisted local search.

Moves: on integer genes, one gene one step up or down, or one step moved from one gene
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

import numpy as np

from prunesearch.search.indicators import hypervolume

__all__ = [
    "domination_depth",
    "greedy_select",
    "hv_improvements",
    "hvi_upper_bound",
    "improvement_scores",
    "neighbour_moves",
]


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
    return hypervolume(F, ref)


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


def improvement_scores(C: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The ranking score of each row of ``C`` alone: its HVI over ``front``, or, where it has
    none, minus its distance behind the front (the nearest misses score highest)."""
    C = np.atleast_2d(np.asarray(C, dtype=float))
    front = np.asarray(front, dtype=float).reshape(-1, C.shape[1])
    inside = front[np.all(front < ref, axis=1)]
    hvi = hv_improvements(C, inside, ref)
    return np.where(hvi > 0, hvi, _fallback_score(C, inside, ref))


def hvi_upper_bound(C: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Cheap upper bound of each candidate's HV improvement (vectorised, no HV computation).

    The region a candidate c adds is inside its box [c, ref] and outside the box each single
    front point p covers there, [max(c, p), ref]; so HVI(c) <= vol[c, ref] - max_p vol[max(c, p),
    ref]. The lazy greedy loop computes exact HVI only where this bound could win.
    """
    C = np.atleast_2d(C)
    box = np.prod(np.clip(ref - C, 0.0, None), axis=1)
    if len(front) == 0:
        return box
    covered = np.zeros(len(C))
    for start in range(0, len(C), 512):
        chunk = C[start:start + 512]
        inner = np.prod(np.clip(ref - np.maximum(chunk[:, None, :], front[None, :, :]), 0.0,
                                None), axis=2)
        covered[start:start + 512] = inner.max(axis=1)
    return np.maximum(box - covered, 0.0)


def greedy_select(
    predicted: np.ndarray,
    front: np.ndarray,
    ref: np.ndarray,
    *,
    groups: np.ndarray,
    per_group: int,
    total: int,
    samples: np.ndarray | None = None,
) -> list[int]:
    """Pick up to ``total`` candidates (at most ``per_group`` per group) by greedy HVI.

    Args:
        predicted: Predicted (normalised) objectives of the candidates (m, n_obj).
        front: Current (normalised) front.
        ref: Reference point.
        groups: Group (parent) id of each candidate.
        per_group: Cap per group.
        total: Overall cap.
        samples: Optional (m, k, n_obj) draws from each candidate's predictive distribution;
            the score is then the expected HVI (the mean over the draws) instead of the HVI of
            ``predicted``. The draws should share random numbers across candidates.

    Returns:
        Indices into ``predicted``, best first.
    """
    predicted = np.asarray(predicted, dtype=float)
    ref = np.asarray(ref, dtype=float)
    front = np.asarray(front, dtype=float).reshape(-1, predicted.shape[1])
    front = front[np.all(front < ref, axis=1)]
    m = len(predicted)
    if m == 0 or total <= 0 or per_group <= 0:
        return []
    # The point that bounds a candidate's score from below in every objective.
    optimistic = predicted if samples is None else np.min(samples, axis=1)
    bound = hvi_upper_bound(optimistic, front, ref)
    # The fallback (distance behind the front) is needed up front only where the bound rules
    # out any improvement; the others get theirs if their exact score comes out 0.
    fallback = np.zeros(m)
    hopeless = bound <= 0
    if hopeless.any():
        fallback[hopeless] = _fallback_score(predicted[hopeless], front, ref)
    base = _hv(front, ref)

    def exact(i: int) -> float:
        points = predicted[i][None, :] if samples is None else samples[i]
        gains = [_hv(np.vstack([front, p]), ref) - base
                 for p in points if np.all(p < ref)]
        return max(0.0, float(np.sum(gains)) / len(points)) if gains else 0.0

    FIXED, UNSCORED = -2, -1
    # Heap of (-score, index, state): state is the front version an exact score was computed
    # against, UNSCORED for an upper bound, FIXED for a (version-independent) fallback score.
    heap = [(-float(bound[i]), i, UNSCORED) if bound[i] > 0 else (-float(fallback[i]), i, FIXED)
            for i in range(m)]
    heapq.heapify(heap)
    version = 0
    taken: list[int] = []
    per_group_count: dict[int, int] = {}
    while heap and len(taken) < total:
        _, i, state = heapq.heappop(heap)
        g = int(groups[i])
        if per_group_count.get(g, 0) >= per_group:
            continue
        if state != FIXED and state != version:
            # An upper bound or a score against a smaller front: HVI only shrinks as the front
            # grows, so re-scoring lazily keeps the greedy choice exact.
            score = exact(i)
            if score > 0:
                heapq.heappush(heap, (-score, i, version))
            else:
                heapq.heappush(heap, (-float(_fallback_score(predicted[i:i + 1], front,
                                                             ref)[0]), i, FIXED))
            continue
        taken.append(i)
        per_group_count[g] = per_group_count.get(g, 0) + 1
        if state != FIXED:
            # Believer update: the pick's predicted point joins the front.
            front = np.vstack([front, predicted[i]])
            front = front[np.all(front < ref, axis=1)]
            base = _hv(front, ref)
            version += 1
    return taken
