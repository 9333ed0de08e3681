"""Import PyTorch Geometric without the one warning its import raises on torch >= 2.11.

``torch_geometric`` applies ``torch.jit.script`` to a helper class at import time, and torch
now warns that ``torch.jit.script`` is deprecated: a FutureWarning about PyG's internals that
every ICPG trial printed and that the user can do nothing about. Only that message is silenced,
only while PyG is first imported; every other warning (ours, PyG's at run time) still shows.
Import PyG's layers from here; import anything else of PyG inside :func:`quiet_import`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

__all__ = ["GCNConv", "MessagePassing", "PygLinear", "global_add_pool", "quiet_import"]


@contextlib.contextmanager
def quiet_import() -> Iterator[None]:
    """Silence torch's ``torch.jit.script`` deprecation warning while PyG is imported."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                                category=FutureWarning)
        yield


with quiet_import():
    from torch_geometric.nn import GCNConv, MessagePassing, global_add_pool
    from torch_geometric.nn.dense.linear import Linear as PygLinear
