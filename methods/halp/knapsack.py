"""HALP's latency-constrained knapsack with the ordering constraint, solved exactly by DP.

Every layer (channel group) holds granules sorted by importance, most important first. A granule
may be kept only if every more important granule of its layer is kept, and every layer keeps at
least its first granule. So a layer's choice is a *prefix length* ``k >= 1``, worth the summed
importance of its first ``k`` granules and costing their summed latency. Maximising the total
importance under a latency budget is then a multiple-choice knapsack, solved exactly by dynamic
programming over integer latency units.

Latency deltas may be negative (latency moves in steps with channel count; removing a granule can
make a layer slower). Prefix costs are shifted per layer by their minimum so the DP sees
non-negative costs, and the budget is raised by the same total (HALP's "extra capacity").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["KnapsackSolution", "prefix_knapsack", "quantise_costs"]


class KnapsackSolution(tuple):
    """Chosen prefix length per layer (a tuple of ints) with ``value``, ``cost`` and
    ``feasible`` (False: not even the cheapest choice fits, and the cheapest is returned)."""

    value: float
    cost: int
    feasible: bool

    def __new__(cls, counts: Sequence[int], *, value: float, cost: int,  # noqa: PYI034
                feasible: bool) -> KnapsackSolution:
        obj = super().__new__(cls, tuple(int(k) for k in counts))
        obj.value, obj.cost, obj.feasible = float(value), int(cost), bool(feasible)
        return obj


def _prefix(values: Sequence[Sequence[float]], costs: Sequence[Sequence[int]]
            ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if len(values) != len(costs) or not values:
        raise ValueError(f"values and costs must hold the same number (>= 1) of layers, got "
                         f"{len(values)} and {len(costs)}")
    cum_v, cum_c = [], []
    for layer, (v, c) in enumerate(zip(values, costs)):
        v = np.asarray(v, dtype=np.float64)
        c = np.asarray(c)
        if v.ndim != 1 or v.shape != c.shape or v.size == 0:
            raise ValueError(f"layer {layer}: values and costs must be equal, non-empty 1-D "
                             f"sequences, got shapes {v.shape} and {c.shape}")
        if not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"layer {layer}: costs must be integers (latency units), got "
                             f"{c.dtype}; see quantise_costs")
        cum_v.append(np.cumsum(v))
        cum_c.append(np.cumsum(c.astype(np.int64)))
    return cum_v, cum_c


def prefix_knapsack(values: Sequence[Sequence[float]], costs: Sequence[Sequence[int]],
                    capacity: int) -> KnapsackSolution:
    """Keep a prefix of every layer's granules, maximising total value within ``capacity``.

    Args:
        values: per layer, the value (importance) of each granule, in keep order.
        costs: per layer, the integer cost (latency units) of each granule, same order; the
            first granule's cost is paid by every solution. Costs may be negative.
        capacity: the integer budget on the total cost.

    Returns:
        The prefix length (>= 1) of every layer. Among optimal solutions the DP prefers the
        longer prefix (a zero-value granule is kept while the budget allows it). When even the cheapest
        choice exceeds ``capacity`` the cheapest is returned with ``feasible=False``.
    """
    cum_v, cum_c = _prefix(values, costs)
    shifts = [int(c.min()) for c in cum_c]
    shifted = [c - s for c, s in zip(cum_c, shifts)]
    room = int(capacity) - sum(shifts)
    if room < 0:
        counts = [int(np.argmin(c)) + 1 for c in cum_c]
        return KnapsackSolution(counts, value=sum(v[k - 1] for v, k in zip(cum_v, counts)),
                                cost=sum(int(c[k - 1]) for c, k in zip(cum_c, counts)),
                                feasible=False)
    # best[u]: the highest value of the layers so far with total shifted cost <= u.
    best = np.zeros(room + 1, dtype=np.float64)
    choices = np.zeros((len(cum_v), room + 1), dtype=np.int64)
    for layer, (v, c) in enumerate(zip(cum_v, shifted)):
        new = np.full(room + 1, -np.inf)
        pick = np.zeros(room + 1, dtype=np.int64)
        for k in range(len(v)):
            w = int(c[k])
            if w > room:
                continue
            candidate = np.full(room + 1, -np.inf)
            candidate[w:] = best[: room + 1 - w] + v[k]
            better = candidate >= new
            new[better] = candidate[better]
            pick[better] = k
        best, choices[layer] = new, pick
    counts = [0] * len(cum_v)
    u = room
    for layer in range(len(cum_v) - 1, -1, -1):
        k = int(choices[layer, u])
        counts[layer] = k + 1
        u -= int(shifted[layer][k])
    return KnapsackSolution(counts, value=sum(v[k - 1] for v, k in zip(cum_v, counts)),
                            cost=sum(int(c[k - 1]) for c, k in zip(cum_c, counts)),
                            feasible=True)


def quantise_costs(costs_ms: Sequence[Sequence[float]], budget_ms: float, units: int
                   ) -> tuple[list[np.ndarray], int, float]:
    """Integer latency units for :func:`prefix_knapsack`.

    One unit is ``range / units`` ms, where ``range`` is the span of total latency the choices
    can reach, so the DP has about ``units`` cells whatever the network's latency. Prefix costs
    are rounded *up* and the budget *down*, so a solution that fits in units also fits in ms
    (HALP scales latencies by 1000 and rounds; rounding up keeps the budget a hard one).

    Args:
        costs_ms: per layer, per-granule latency costs in ms (keep order; may be negative).
        budget_ms: the budget on the summed costs, in ms.
        units: cells of the DP over the reachable latency range.

    Returns:
        Per-granule integer costs (whose prefix sums are the rounded-up prefix costs), the
        integer capacity and the unit in ms.
    """
    cums = [np.cumsum(np.asarray(c, dtype=np.float64)) for c in costs_ms]
    span = sum(float(c.max() - c.min()) for c in cums)
    unit = span / units if span > 0 else 1.0
    int_costs = []
    for cum in cums:
        rounded = np.ceil(cum / unit - 1e-9).astype(np.int64)
        int_costs.append(np.diff(rounded, prepend=0))
    capacity = math.floor(budget_ms / unit + 1e-9)
    return int_costs, int(capacity), unit
