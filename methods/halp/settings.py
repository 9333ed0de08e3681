"""The ``halp`` config section: latency targets and the prune-while-fine-tuning schedule.

Defaults follow the official code (NVlabs/HALP, METHODS_NOTES §1.5): 30 pruning steps, one
every 40 iterations, an exponential (log-space) latency schedule. Training values are sized for
CIFAR fine-tuning; the configs set them per experiment.
"""

from __future__ import annotations

import dataclasses

from prunesearch.search.settings import setting

__all__ = ["SCHEDULES", "TARGET_UNITS", "HALPSettings"]

#: How the latency budget moves from the dense latency to the target over the pruning steps.
SCHEDULES = ("exp", "linear")
#: How ``latency_targets`` are read: fractions of the dense table latency, or milliseconds.
TARGET_UNITS = ("fraction", "ms")


@dataclasses.dataclass(frozen=True)
class HALPSettings:
    """The ``halp`` section (used when ``method: halp``)."""

    latency_targets: tuple[float, ...] = setting(
        (0.7, 0.5, 0.3), min=0.0,
        help="one pruned network per target: fractions of the dense table latency (or ms)")
    target_unit: str = setting("fraction", choices=TARGET_UNITS,
                               help="fraction: of the dense table latency; ms: milliseconds")
    pruning_steps: int = setting(30, min=1, help="knapsack pruning steps (HALP: 30)")
    interval: int = setting(40, min=1, help="training iterations between pruning steps (HALP: 40)")
    schedule: str = setting("exp", choices=SCHEDULES,
                            help="latency budget per step: exp (log-space, HALP) or linear")
    finetune_steps: int = setting(200, min=0,
                                  help="training iterations after the last pruning step")
    lr: float = setting(0.01, min=0.0, help="SGD learning rate (cosine-decayed over all steps)")
    lr_schedule: str = setting("cosine", choices=("cosine", "constant"))
    momentum: float = setting(0.9, min=0.0, max=1.0)
    weight_decay: float = setting(5e-4, min=0.0)
    batch_size: int = setting(64, min=1)
    augmentation: bool = setting(True, help="random crop + flip (images >= 32 px only)")
    latency_units: int = setting(
        1000, min=10, help="integer resolution of the knapsack's latency capacity (DP size)")

    def __post_init__(self) -> None:
        if not self.latency_targets:
            raise ValueError("halp.latency_targets must name at least one target")
        if self.target_unit == "fraction" and any(not 0.0 < t < 1.0
                                                   for t in self.latency_targets):
            raise ValueError(f"halp.latency_targets {list(self.latency_targets)}: fractions of "
                             "the dense latency must lie in (0, 1)")
        if self.target_unit == "ms" and any(t <= 0.0 for t in self.latency_targets):
            raise ValueError(f"halp.latency_targets {list(self.latency_targets)}: "
                             "milliseconds must be > 0")
