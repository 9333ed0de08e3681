"""``eager``: the module as it is, one Python-dispatched forward per timed step."""

from __future__ import annotations

from prunesearch.methods.cost.runtimes import LatencyRuntime

__all__ = ["EagerRuntime"]


class EagerRuntime(LatencyRuntime):
    """Plain eager PyTorch (the default; on CUDA, launch-bound at small batches)."""

    name = "eager"
