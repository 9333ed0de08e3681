"""ICPG: inductive co-pruning of GNN edges and weights (Sui et al.; docs/METHODS.md, "ICPG").

Public names: :class:`ICPGSettings` (the ``icpg`` config section), :data:`ICPG_METHOD` (the
trial-based method the Tune runner drives), :class:`GraphTrial` / :class:`NodeTrial` (one fold
and baseline, one step per round), the models (:class:`GraphClassifier`, :class:`AutoMasker`,
:class:`NodeClassifier`, :class:`NodeMasker`) and the dataset loaders. Everything but the
settings is imported on first use, so the config loader does not pay for torch and PyG.
"""

from __future__ import annotations

import importlib
from typing import Any

from prunesearch.methods.icpg.settings import ICPGSettings

_LAZY = {
    "GraphSet": "graphs", "NodeGraph": "graphs", "check_dataset": "graphs",
    "dataset_kind": "graphs", "load_graph_set": "graphs", "load_node_graph": "graphs",
    "ICPG_METHOD": "method", "default_space": "method", "make_trial": "method",
    "summarize": "method",
    "AutoMasker": "models", "GraphClassifier": "models", "NodeClassifier": "models",
    "NodeMasker": "models",
    "GraphTrial": "trial", "NodeTrial": "trial",
}

__all__ = [  # noqa: RUF022 - the settings first, then the lazily imported names
    "ICPGSettings", "ICPG_METHOD", "AutoMasker", "GraphClassifier", "GraphSet", "GraphTrial",
    "NodeClassifier", "NodeGraph", "NodeMasker", "NodeTrial", "check_dataset", "dataset_kind",
    "default_space", "load_graph_set", "load_node_graph", "make_trial", "summarize",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
