"""ONNX Runtime vs eager PyTorch latency of dense and pruned CIFAR ResNet-56 on the CPU
(issue 16, item 2): does the pruned/dense ratio, which decides the front, differ by runtime?

Both runtimes time through the same harness (``measure_latency``, 1 thread; median and p25
printed); the ORT figure runs
the network exported in memory (opset 18) in an ``InferenceSession`` with the CPU execution
provider (intra-op threads 1, ORT_ENABLE_ALL). Pruned networks: uniform keep ratios 0.5 and
0.25 of every group, and one seeded random genome (calibration spread), physically pruned.
The first runtime is alternated per network so drift does not favour one.

Usage (under the shared lock)::

    flock /tmp/cpu.lock .venv/bin/python bench/ort_vs_eager.py --batch 1 64
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from prunesearch.methods.cost.calibration import calibration_genomes
    from prunesearch.methods.cost.latency import measure_latency
    from prunesearch.methods.models import build_model
    from prunesearch.methods.pruning import apply_genome
    from prunesearch.methods.evaluator import _space_for

    torch.manual_seed(0)
    base = build_model("resnet56", num_classes=10).eval()
    space = _space_for(base, "resnet56", 4, (3, 32, 32))
    upper = np.asarray(space.upper())
    nets = {"dense": tuple(int(v) for v in upper),
            "uniform 0.5": tuple(int(max(1, round(0.5 * v))) for v in upper),
            "uniform 0.25": tuple(int(max(1, round(0.25 * v))) for v in upper),
            "random": calibration_genomes(space.lower(), space.upper(), 1, seed=3)[1]}
    print(f"load average at start: {os.getloadavg()}")
    for batch in args.batch:
        repeats = 40 if batch == 1 else 8
        res: dict[str, dict[str, float]] = {}
        for k, (name, genome) in enumerate(nets.items()):
            module = apply_genome(base, space, space.validate(genome),
                                  importance="l1").module.eval()
            order = ("eager", "onnxruntime") if k % 2 == 0 else ("onnxruntime", "eager")
            res[name] = {}
            for runtime in order:
                r = measure_latency(module, (3, 32, 32), runtime=runtime, batch_size=batch,
                                    threads=args.threads, warmup=3, repeats=repeats)
                res[name][runtime] = r.median_ms
                res[name][runtime + "_p25"] = r.p25_ms
        dense = res["dense"]
        for name, r in res.items():
            print(f"batch {batch:>3} | {name:>12} | eager {r['eager']:9.3f} ms (p25 "
                  f"{r['eager_p25']:.3f}) | ORT {r['onnxruntime']:9.3f} ms (p25 "
                  f"{r['onnxruntime_p25']:.3f}) | ORT/eager {r['onnxruntime'] / r['eager']:.3f}"
                  f" | vs dense: eager {r['eager'] / dense['eager']:.3f}, ORT "
                  f"{r['onnxruntime'] / dense['onnxruntime']:.3f}", flush=True)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
