"""Neighbour moves, hypervolume improvement and greedy batch selection."""

from __future__ import annotations

import numpy as np
import pytest

from prunesearch.search.indicators import comparison_hypervolumes, hypervolume
from prunesearch.search.local_search import (
    greedy_select,
    hv_improvements,
    hvi_upper_bound,
    neighbour_moves,
)


def test_integer_moves_are_one_step_or_one_transfer_inside_bounds():
    rng = np.random.default_rng(0)
    xl, xu = np.ones(8), np.full(8, 4.0)
    parent = np.array([1, 4, 2, 3, 1, 4, 2, 2], dtype=float)
    moves = neighbour_moves(parent, xl=xl, xu=xu, integer=True, n_samples=200, rng=rng)
    assert len(moves) == len(np.unique(moves, axis=0)) > 20
    assert np.all((moves >= xl) & (moves <= xu))
    delta = moves - parent
    changed = np.count_nonzero(delta, axis=1)
    assert set(changed) == {1, 2}
    assert np.all(np.abs(delta).max(axis=1) == 1)
    # Two-gene moves are transfers: one gene gives the step, the other takes it.
    assert np.all(delta[changed == 2].sum(axis=1) == 0)


def test_real_moves_change_one_or_two_genes_by_small_steps():
    rng = np.random.default_rng(1)
    xl, xu = np.zeros(10), np.full(10, 2.0)
    parent = np.full(10, 1.0)
    moves = neighbour_moves(parent, xl=xl, xu=xu, integer=False, n_samples=300, rng=rng,
                            step_fraction=0.05)
    delta = moves - parent
    assert set(np.count_nonzero(delta, axis=1)) <= {1, 2}
    assert np.std(delta[delta != 0]) == pytest.approx(0.1, rel=0.2)


def test_hv_improvement_matches_brute_force():
    front = np.array([[0.1, 0.8], [0.5, 0.5], [0.8, 0.1]])
    ref = np.array([1.0, 1.0])
    C = np.array([[0.3, 0.6], [0.6, 0.6], [0.05, 0.05], [1.2, 0.0]])
    hvi = hv_improvements(C, front, ref)
    base = hypervolume(front, ref)
    for c, v in zip(C, hvi):
        assert v == pytest.approx(max(0.0, hypervolume(np.vstack([front, c]), ref) - base))
    assert hvi[1] == 0.0 and hvi[3] == 0.0 and hvi[2] > hvi[0] > 0


def test_greedy_selection_spreads_over_the_front_and_respects_caps():
    front = np.array([[0.0, 1.0], [1.0, 0.0]])
    ref = np.array([1.1, 1.1])
    # Two near-identical candidates in the middle, one on the side.
    C = np.array([[0.5, 0.5], [0.5001, 0.5001], [0.2, 0.85], [0.9, 0.9]])
    chosen = greedy_select(C, front, ref, groups=np.array([0, 1, 2, 3]), per_group=1, total=2)
    assert chosen == [0, 2]  # the twin of the first pick gains almost nothing afterwards
    one_group = greedy_select(C, front, ref, groups=np.zeros(4, dtype=int), per_group=1, total=3)
    assert one_group == [0]


def test_comparison_hypervolumes():
    a = np.array([[0.0, 1.0], [1.0, 0.0]])
    b = np.array([[0.5, 0.5]])
    hv_a, hv_b, hv_empty = comparison_hypervolumes([a, b, np.empty((0, 2))])
    # Union ideal (0, 0), nadir (1, 1), ref 1.1.
    assert hv_a == pytest.approx(hypervolume(a, [1.1, 1.1]))
    assert hv_b == pytest.approx(0.36) and hv_empty == 0.0
    ref = np.array([2.0, 2.0])
    assert comparison_hypervolumes([b], ref=ref)[0] == pytest.approx(0.75 * 0.75)
    with pytest.raises(ValueError, match="ref"):
        comparison_hypervolumes([b], ref=[0.0, 1.0])


def test_hvi_upper_bound_never_underestimates():
    rng = np.random.default_rng(3)
    front = rng.random((15, 3))
    front = front[np.argsort(front.sum(1))][:10]
    ref = np.full(3, 1.1)
    C = rng.random((200, 3))
    exact = hv_improvements(C, front, ref)
    bound = hvi_upper_bound(C, front, ref)
    assert np.all(bound >= exact - 1e-12)
    assert np.mean(bound[exact > 0] / exact[exact > 0]) < 10  # and is not uselessly loose


def test_greedy_selection_with_samples_scores_expected_improvement():
    front = np.array([[0.0, 1.0], [1.0, 0.0]])
    ref = np.array([1.1, 1.1])
    mean = np.array([[0.6, 0.6], [0.62, 0.62]])
    # The second candidate is slightly worse on average but very uncertain.
    z = np.array([[-1.0, -1.0], [1.0, 1.0]])
    samples = mean[:, None, :] + np.array([0.01, 0.4])[:, None, None] * z[None, :, :]
    assert greedy_select(mean, front, ref, groups=np.arange(2), per_group=1, total=1) == [0]
    assert greedy_select(mean, front, ref, groups=np.arange(2), per_group=1, total=1,
                         samples=samples) == [1]


def test_comparison_normaliser_spans_every_front_point():
    a = np.array([[0.0, 1.0], [1.0, 0.0]])
    far = np.array([[0.0, 3.0]])  # dominated by a's union front, still inside the reference box
    hv_a, hv_far = comparison_hypervolumes([a, far])
    assert hv_far > 0 and hv_a > hv_far
