"""How a latency figure timed in several rounds combines them (``hardware.rounds_statistic``).

Kept free of torch: the end-of-run re-timing and the report use it in the driver process.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ROUND_STATISTICS", "combine_rounds"]

#: ``median``: a slow spell spoils one round of a figure; ``min``: the fastest round, which on a
#: machine whose speed changes in spells is the one most often in the same (fast) spell as the
#: other figures it is compared with (docs/METHODS.md, latency under load).
ROUND_STATISTICS = ("median", "min")


def combine_rounds(values: Sequence[float], how: str = "median") -> float:
    """One figure from a measurement's rounds: their ``median`` or their ``min``."""
    if how not in ROUND_STATISTICS:
        raise ValueError(f"rounds statistic {how!r} is not one of: {', '.join(ROUND_STATISTICS)}")
    if not len(values):
        raise ValueError("no rounds to combine")
    return float(np.median(values) if how == "median" else np.min(values))
