"""Layer specs of torchvision networks: traced per width vector vs the affine spec model.

For each network: its genes, the seconds one width vector costs to trace (a Torch-Pruning-pruned
copy traced with torch.fx), the seconds the model's fit costs (1 + genes traces, checked on two
more), what a modelled vector costs, whether the model holds (else every vector is traced), and
whether modelled and traced specs agree on random vectors. Ratios are from one run.

    .venv/bin/python bench/spec_model.py [--models NAME ...] [--size 32] [--granularity 8]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
import torchvision.models as tvm

from prunesearch.methods.pruning import genome_space
from prunesearch.methods.pruning import specs as spec_mod

MODELS = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf",
          "shufflenet_v2_x1_0", "densenet121", "convnext_tiny")


def _build(name: str) -> torch.nn.Module:
    kwargs = {"num_classes": 10}
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False
    return getattr(tvm, name)(**kwargs).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--granularity", type=int, default=8)
    parser.add_argument("--vectors", type=int, default=200, help="modelled vectors timed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# spec model bench: {platform.node()}, torch {torch.__version__}, 1 thread, input "
          f"{args.size}x{args.size}, granularity {args.granularity}")
    print("| network | genes | trace s/vector | fit s | model ms/vector | trace / model | "
          "fit = traces | model holds | modelled == traced (5 random) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        torch.manual_seed(0)
        space = genome_space(_build(name), f"torchvision:{name}", args.granularity,
                             input_shape=(3, args.size, args.size))
        hw = (args.size, args.size)
        rng = np.random.default_rng(0)

        def vector() -> tuple[int, ...]:
            return tuple(space.channels([int(rng.integers(1, u + 1)) for u in space.upper()]))

        traced = []
        for _ in range(5):
            v = vector()
            start = time.perf_counter()
            spec_mod.traced_specs(space, v, 1, hw)
            traced.append(time.perf_counter() - start)
        trace_s = statistics.median(traced)
        start = time.perf_counter()
        model = spec_mod._affine_model(space, 1, hw)
        fit_s = time.perf_counter() - start
        model_ms = float("nan")
        agree = "-"
        if model is not None:
            vectors = [vector() for _ in range(args.vectors)]
            start = time.perf_counter()
            for v in vectors:
                model(v)
            model_ms = (time.perf_counter() - start) / len(vectors) * 1e3
            checks = [vector() for _ in range(5)]
            agree = str(all(model(v) == spec_mod.traced_specs(space, v, 1, hw) for v in checks))
        ratio = trace_s / (model_ms / 1e3) if model is not None else float("nan")
        print(f"| {name} | {len(space.groups)} | {trace_s:.3f} | {fit_s:.1f} | {model_ms:.2f} | "
              f"{ratio:.0f}x | {fit_s / trace_s:.0f} | {model is not None} | {agree} |",
              flush=True)


if __name__ == "__main__":
    main()
