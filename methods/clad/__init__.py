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
Everything but the settings is imported on first use, so the config loader does not pay for
torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from prunesearch.methods.clad.settings import CRITERIA, FIXED_CRITERIA, CLADSettings

_LAZY = {
    "fixed_scores": "criteria", "pruned_groups": "criteria",
    "rate_for_macs_reduction": "criteria", "target_genome": "criteria",
    "DESCRIPTORS": "learner", "ChannelMasks": "learner", "CriterionLearner": "learner",
    "LayerLearner": "learner", "filter_descriptors": "learner", "group_producers": "learner",
    "hard_mask": "learner", "keep_mask": "learner", "znorm": "learner",
    "CLAD_METHOD": "trial", "CLADTrial": "trial", "validate_clad_config": "trial",
}

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
