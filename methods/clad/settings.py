"""The ``clad`` config section (see ``docs/METHODS.md``, "CLAD", for every choice)."""

from __future__ import annotations

import dataclasses

from prunesearch.search.settings import setting

__all__ = ["CRITERIA", "FIXED_CRITERIA", "CLADSettings"]

#: Fixed (hand-designed) criteria run through the same pipeline as the learned one.
FIXED_CRITERIA = ("l1", "l2", "fpgm", "taylor")
CRITERIA = ("learned", *FIXED_CRITERIA)


@dataclasses.dataclass(frozen=True)
class CLADSettings:
    """The ``clad`` section: criterion learner, attention distillation and fine-tuning.

    Defaults are the standard full-budget choices (CIFAR: 20 learner epochs, 200 fine-tune
    epochs); the configs shrink them for CPU runs.
    """

    rate: float = setting(0.5, min=0.0, max=0.95,
                          help="fraction of filters removed from every pruned layer")
    criterion: str = setting("learned", choices=CRITERIA,
                             help="learned (CLAD) or a fixed baseline: l1, l2, fpgm, taylor")
    layers: str = setting(
        "blocks", choices=("blocks", "all"),
        help="blocks: first conv of every residual block (plain nets: every conv); "
             "all: also the stage (residual) widths, through the pruning core's groups")
    distill_weight: float = setting(
        1000.0, min=0.0, help="beta of the attention-transfer term (0 disables distillation)")
    distill_finetune: bool = setting(True, help="keep the attention term while fine-tuning")
    kd_weight: float = setting(0.0, min=0.0, help="weight of logit distillation (0: off)")
    kd_temperature: float = setting(4.0, min=0.01, help="temperature of logit distillation")
    learner_epochs: int = setting(20, min=0,
                                  help="epochs of criterion-learner training (learned only)")
    learner_lr: float = setting(1e-3, min=0.0, help="Adam learning rate of the learners")
    learner_width: int = setting(16, min=1, help="hidden units of each layer's learner MLP")
    learner_prior: str = setting(
        "l1", choices=("l1", "none"),
        help="l1: the learner's linear skip starts as the z-scored L1 norm; none: zero")
    learner_training: str = setting(
        "frozen", choices=("frozen", "joint"),
        help="frozen: only the learners train; joint: network weights train with them (SGD)")
    learner_bn: str = setting(
        "batch", choices=("batch", "running"),
        help="BN statistics while the learners train: batch (as after BN recalibration of the "
             "pruned net) or the dense net's running ones")
    mask: str = setting("sigmoid", choices=("sigmoid", "ste"),
                        help="sigmoid: annealed soft mask; ste: hard top-k, sigmoid gradient")
    temperature_start: float = setting(1.0, min=1e-4, help="mask temperature at the start")
    temperature_end: float = setting(0.05, min=1e-4, help="mask temperature at the end")
    finetune_epochs: int = setting(200, min=0, help="fine-tuning epochs after hard pruning")
    lr: float = setting(0.01, min=0.0, help="SGD learning rate (cosine to 0) for fine-tuning")
    momentum: float = setting(0.9, min=0.0, max=1.0)
    weight_decay: float = setting(5e-4, min=0.0)
    batch_size: int = setting(128, min=1, help="training batch size (learner and fine-tune)")
    augmentation: bool = setting(True, help="random crop + flip (images >= 32 px)")
    batches_per_epoch: int | None = setting(
        None, min=1, help="cap on batches per epoch (null: the whole training set)")
    taylor_batches: int = setting(4, min=1,
                                  help="training batches whose mean gradient scores taylor")
    bn_recalibration_batches: int = setting(
        10, min=0, help="batches re-estimating BN statistics right after hard pruning")
    val_batches: int | None = setting(None, min=1, help="cap on validation batches per step")
    measure_latency: bool = setting(
        True, help="time the final network end to end (latency_ms_measured)")
    latency_table: str | None = setting(
        None, help="a saved calibrated latency_table.json to reuse (null: build one per trial)")

    def __post_init__(self) -> None:
        if self.temperature_end > self.temperature_start:
            raise ValueError(f"temperature_end {self.temperature_end} must not exceed "
                             f"temperature_start {self.temperature_start}")
