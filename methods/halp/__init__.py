"""HALP, the latency-saliency knapsack baseline (Shen et al., NeurIPS 2022; NVlabs/HALP).

Plain PyTorch (no Ray, no pymoo)::

    from prunesearch.methods.halp import HALPSettings, prune_to_latency
    result = prune_to_latency(base, space, lambda g: cost.evaluate(g)["latency_ms"],
                              bundle.train, bundle.val, target_ms=3.0,
                              settings=HALPSettings(), seed=0)
    result.module, result.genome, result.latency_ms
"""

from prunesearch.methods.halp.knapsack import KnapsackSolution, prefix_knapsack, quantise_costs
from prunesearch.methods.halp.pruner import (
    HALP_IMPORTANCE,
    HALPResult,
    prune_to_latency,
    step_budgets,
    target_latency_ms,
)
from prunesearch.methods.halp.settings import SCHEDULES, TARGET_UNITS, HALPSettings

__all__ = [
    "HALP_IMPORTANCE",
    "SCHEDULES",
    "TARGET_UNITS",
    "HALPResult",
    "HALPSettings",
    "KnapsackSolution",
    "prefix_knapsack",
    "prune_to_latency",
    "quantise_costs",
    "step_budgets",
    "target_latency_ms",
]
