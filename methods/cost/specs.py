"""Layer shape records shared by the pruning (who knows the architecture) and cost models
(who turn shapes into FLOPs, parameters, memory and table latency)."""

from __future__ import annotations

import dataclasses

__all__ = ["LayerSpec"]


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One inference-time operation with its shapes.

    ``op`` is one of: ``conv``, ``bn``, ``relu``, ``add`` (residual add), ``shortcut``
    (parameter-free option-A subsample + channel scatter), ``maxpool``, ``avgpool``, ``gap``
    (global average pool), ``flatten``, ``linear``, ``embed`` (a lookup of ``in_hw[0]`` token
    ids, the vocabulary size in ``kernel``), ``deconv`` (a transposed conv: ``kernel``,
    ``stride``, ``padding`` are its own; its output size follows from ``out_hw``). For ``linear``
    the spatial sizes are (1, 1).

    ``kernel``, ``stride`` and ``padding`` are one int when equal along both axes (square), else
    ``(h, w)`` (Inception's 1x7 and 7x1 convs).

    ``dilation`` is a conv's (same form; 1 for every other op).

    ``dims`` is the number of spatial dimensions the op runs over: 2 for images (NCHW), 1 for
    sequences (NCL, recorded as ``in_hw = (L, 1)``; a ``conv`` is then a ``Conv1d`` with a
    ``kernel``-long kernel).
    """

    op: str
    batch: int
    in_channels: int
    out_channels: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: int | tuple[int, int] = 1
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    groups: int = 1
    bias: bool = False
    dims: int = 2
    dilation: int | tuple[int, int] = 1

    @property
    def taps(self) -> int:
        """Kernel positions per output element and input channel (``kernel**dims`` when
        square)."""
        if isinstance(self.kernel, tuple):
            return int(self.kernel[0]) * int(self.kernel[1])
        return int(self.kernel) ** self.dims

    def key(self) -> str:
        """Shape key for the latency table (device/runtime/dtype/torch are the table's own key)."""
        return (f"{self.op}_b{self.batch}_i{self.in_channels}_o{self.out_channels}"
                f"_h{self.in_hw[0]}x{self.in_hw[1]}_k{_axes(self.kernel)}_s{_axes(self.stride)}"
                f"_p{_axes(self.padding)}"
                f"_g{self.groups}_{'b' if self.bias else 'nb'}"
                + (f"_d{self.dims}" if self.dims != 2 else "")
                + (f"_dil{_axes(self.dilation)}" if self.dilation != 1 else ""))


def _axes(value: int | tuple[int, int]) -> str:
    # A square value keeps the key it always had ("k3"); a non-square one reads "k1x7".
    return f"{value[0]}x{value[1]}" if isinstance(value, tuple) else str(value)
