"""``compile``: ``torch.compile``'s output is timed (compilation happens during warm-up)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from prunesearch.methods.cost.runtimes import LatencyRuntime

__all__ = ["CompileRuntime"]


class CompileRuntime(LatencyRuntime):
    """``torch.compile`` (default mode). Table entries are timed eagerly (see METHODS.md)."""

    name = "compile"
    layer_runtime = "eager"

    def prepare_module(self, module: Any) -> Callable[..., Any]:
        return torch.compile(module)
