"""HALP, the latency-saliency knapsack baseline (Shen et al., NeurIPS 2022; NVlabs/HALP).

Plain PyTorch (no Ray, no pymoo)::

    from prunesearch.methods.halp import HALPSettings, prune_to_latency
    result = prune_to_latency(base, space, lambda g: cost.evaluate(g)["latency_ms"],
                              bundle.train, bundle.val, target_ms=3.0,
                              settings=HALPSettings(), seed=0)
    result.module, result.genome, result.latency_ms

Everything but the settings is imported on first use, so the config loader does not pay for
torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from prunesearch.methods.halp.settings import SCHEDULES, TARGET_UNITS, HALPSettings

_LAZY = {
    "KnapsackSolution": "knapsack", "prefix_knapsack": "knapsack", "quantise_costs": "knapsack",
    "HALP_IMPORTANCE": "pruner", "HALPResult": "pruner", "prune_to_latency": "pruner",
    "step_budgets": "pruner", "target_latency_ms": "pruner",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
