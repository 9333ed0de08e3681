"""``cuda-graph``: the forward pass captured once into a CUDA graph; replays are timed."""

from __future__ import annotations

from typing import Any

import torch

from prunesearch.methods.cost.runtimes import LatencyRuntime, Step

__all__ = ["GRAPH_COPIES", "CudaGraphRuntime"]

#: Copies of a layer captured into one CUDA graph when timing a table entry: one replay's launch
#: cost (several microseconds, paid once per *network* in a whole-network graph) is then shared
#: by many copies instead of being charged to every layer.
GRAPH_COPIES = 10


class CudaGraphRuntime(LatencyRuntime):
    """CUDA-graph replay (CUDA devices only)."""

    name = "cuda-graph"
    layer_copies = GRAPH_COPIES

    def check(self, device: Any) -> None:
        if torch.device(device).type != "cuda":
            raise ValueError("runtime='cuda-graph' needs a CUDA device, got "
                             f"device={str(device)!r}")

    def prepare_step(self, fn: Step, *, device: Any, warmup: int) -> tuple[Step, int]:
        # Warm up on a side stream before capture, as CUDA graphs require.
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(max(warmup, 3)):
                fn()
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph.replay, max(warmup // 2, 1)
