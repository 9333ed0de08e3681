"""CLAD: a differentiable criterion learner per conv layer plus attention distillation.

Plain PyTorch (no Ray, no pymoo). :data:`CLAD_METHOD` describes the method to the Tune runner;
:class:`CLADTrial` runs one configuration (learner epochs, hard pruning through the pruning
core, fine-tune epochs) and also runs on its own::

    trial = CLADTrial(load_config("configs/clad-resnet20-cifar10-smoke.yaml"), work_dir)
    while not trial.done:
        print(trial.step())
    print(trial.final())

The fixed-criterion baselines (``l1``, ``l2``, ``fpgm``, ``taylor``) are the same trial with
``clad.criterion`` set. See ``docs/METHODS.md`` ("CLAD") for every choice the paper leaves open.
"""

from prunesearch.methods.clad.criteria import (
    fixed_scores,
    pruned_groups,
    rate_for_macs_reduction,
    target_genome,
)
from prunesearch.methods.clad.learner import (
    DESCRIPTORS,
    ChannelMasks,
    CriterionLearner,
    LayerLearner,
    filter_descriptors,
    group_producers,
    hard_mask,
    keep_mask,
    znorm,
)
from prunesearch.methods.clad.settings import CRITERIA, FIXED_CRITERIA, CLADSettings
from prunesearch.methods.clad.trial import CLAD_METHOD, CLADTrial, validate_clad_config

__all__ = [
    "CLAD_METHOD",
    "CRITERIA",
    "DESCRIPTORS",
    "FIXED_CRITERIA",
    "CLADSettings",
    "CLADTrial",
    "ChannelMasks",
    "CriterionLearner",
    "LayerLearner",
    "filter_descriptors",
    "fixed_scores",
    "group_producers",
    "hard_mask",
    "keep_mask",
    "pruned_groups",
    "rate_for_macs_reduction",
    "target_genome",
    "validate_clad_config",
    "znorm",
]
