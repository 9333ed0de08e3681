"""Candidate evaluator and latency cost model on real CIFAR ResNets (issue 3).

Three measurements, each printed as a table (and written as JSON with ``--json``):

1. **Seconds per evaluation** (prune -> BN recalibration -> fine-tune -> validation) for
   ResNet-20 and ResNet-56 at the config's evaluator settings, on the config's device, for
   ``--evals`` seeded random genomes (the first call, which loads the dataset, is reported
   apart). Needs the CIFAR-10 data and pretrained weights under ``data.root``.
2. **Latency table vs end-to-end measurement** on ``--genomes`` random ResNet-56 genomes: the
   table is built and calibrated exactly as a search does (``build_latency_table``), then every
   genome's pruned network is timed end to end (interleaved rounds) and compared with the
   table's prediction: median and p90 absolute error, calibrated and raw (uncalibrated sum).
3. **Is FLOPs a good proxy?** Measured latency vs MACs for uniform keep ratios 1.0 .. 0.3,
   plus, over the random genomes, the error of the best linear fit ``latency ~ a * MACs + b``
   next to the table's error.

Parts 2 and 3 use a randomly initialised ResNet-56 (latency does not depend on weight values),
so they run on any machine with torch (e.g. a GPU box without the dataset).

Usage::

    .venv/bin/python bench/evaluator.py                                 # all parts, config defaults
    .venv/bin/python bench/evaluator.py --skip-eval --set hardware.device=cuda \\
        hardware.runtime=cuda-graph hardware.dtype=float16 hardware.batch_size=256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunesearch.cluster.config import load_config
from prunesearch.methods.cost.latency import device_name
from prunesearch.methods.evaluator import (
    CandidateEvaluator,
    PruningTask,
    build_latency_table,
    cost_model,
    time_genomes,
)
from prunesearch.methods.models import CifarResNet
from prunesearch.methods.pruning import genome_space

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "hamp-resnet56-cifar10.yaml"


def _abs_pct_errors(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return np.abs(predicted - measured) / measured * 100.0


def _summary(errors: np.ndarray) -> dict[str, float]:
    return {"median_abs_pct": float(np.median(errors)),
            "p90_abs_pct": float(np.percentile(errors, 90)),
            "max_abs_pct": float(np.max(errors))}


def bench_evaluations(config: Any, models: list[str], evals: int) -> list[dict[str, Any]]:
    """Seconds per evaluation of seeded random genomes, per model."""
    rows = []
    for name in models:
        cfg = config.replace(model=config.model.__class__(name=name))
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as run_dir:
            task = PruningTask(cfg, run_dir=run_dir)
        build_s = time.perf_counter() - start
        evaluator = CandidateEvaluator(task.payload())
        rng = np.random.default_rng(0)
        genomes = [task.space.random_genome(rng) for _ in range(evals + 1)]
        walls, errors = [], []
        first_s = None
        for i, genome in enumerate(genomes):
            begin = time.perf_counter()
            result = evaluator.evaluate(list(genome), candidate_id=i, seed=cfg.seed)
            wall = time.perf_counter() - begin
            if result["status"] != "ok":
                raise RuntimeError(f"{name} genome {genome} failed: {result['reason']}")
            if i == 0:
                first_s = wall  # includes loading (and on first use decoding) the dataset
                continue
            walls.append(wall)
            errors.append(result["objectives"]["error"])
        row = {"model": name, "task_build_s": build_s, "first_eval_s": first_s,
               "s_per_eval_mean": statistics.fmean(walls), "s_per_eval_min": min(walls),
               "s_per_eval_max": max(walls), "evals": len(walls),
               "val_error_mean": statistics.fmean(errors),
               "dense_flops": task.cheap_metrics(task.upper)["macs"]}
        rows.append(row)
        print(f"[eval] {name}: {row['s_per_eval_mean']:.1f} s/eval "
              f"(min {row['s_per_eval_min']:.1f}, "
              f"max {row['s_per_eval_max']:.1f}; first incl. data {first_s:.1f} s; "
              f"task build {build_s:.1f} s), mean val error {row['val_error_mean']:.3f}",
              flush=True)
    return rows


def bench_latency(config: Any, genomes: int, cache_dir: str) -> dict[str, Any]:
    """Table-vs-measured error on random ResNet-56 genomes, and latency vs MACs."""
    hw = config.hardware
    torch.manual_seed(0)
    base = CifarResNet(56).eval()
    space = genome_space(base, "resnet56", hw.granularity)
    start = time.perf_counter()
    cost = cost_model(space, hw.batch_size, hw.dtype)
    enum_s = time.perf_counter() - start
    start = time.perf_counter()
    table = build_latency_table(base_model=base, space=space, cost=cost, hardware=hw,
                                seed=config.seed, cache_dir=cache_dir)
    table_s = time.perf_counter() - start
    print(f"[table] {len(cost.specs)} layer shapes enumerated in {enum_s:.1f} s, table built and "
          f"calibrated in {table_s:.1f} s: measured = {table.scale:.3f} * table + "
          f"{table.offset_ms:.3f} ms", flush=True)

    rng = np.random.default_rng(12345)
    random_genomes = [space.random_genome(rng) for _ in range(genomes)]
    ratios = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    uniform = [space.uniform_genome(r) for r in ratios]
    all_genomes = random_genomes + uniform
    start = time.perf_counter()
    measured = np.asarray(time_genomes(base, space, all_genomes, hw))
    measure_s = time.perf_counter() - start
    cost_out = cost.evaluate(np.asarray(all_genomes))
    predicted, raw = cost_out["latency_ms"], cost_out["latency_raw_ms"]
    flops = cost_out["macs"].astype(float)

    n = len(random_genomes)
    m_rand, p_rand, r_rand, f_rand = measured[:n], predicted[:n], raw[:n], flops[:n]
    # FLOPs as a proxy, given every advantage: the best linear fit on the very genomes scored.
    slope, intercept = np.polyfit(f_rand, m_rand, 1)
    flops_fit = slope * f_rand + intercept
    result = {
        "device": device_name(hw.device), "runtime": hw.runtime, "dtype": hw.dtype,
        "batch_size": hw.batch_size, "threads": hw.threads, "torch": torch.__version__,
        "granularity": hw.granularity, "table_shapes": len(cost.specs),
        "table_build_s": table_s, "measure_s": measure_s,
        "calibration": {"mode": table.calibration, "scale": table.scale,
                        "offset_ms": table.offset_ms, "points": table.calibration_points},
        "genomes": n,
        "table_error": _summary(_abs_pct_errors(p_rand, m_rand)),
        "raw_table_error": _summary(_abs_pct_errors(r_rand, m_rand)),
        "flops_linear_fit_error": _summary(_abs_pct_errors(flops_fit, m_rand)),
        "pearson_latency_vs_table": float(np.corrcoef(p_rand, m_rand)[0, 1]),
        "pearson_latency_vs_flops": float(np.corrcoef(f_rand, m_rand)[0, 1]),
        "uniform": [],
    }
    dense_ms, dense_flops = measured[n], flops[n]
    for r, i in zip(ratios, range(n, n + len(ratios))):
        result["uniform"].append({
            "keep_ratio": r, "macs_m": flops[i] / 1e6, "macs_rel": flops[i] / dense_flops,
            "measured_ms": float(measured[i]), "measured_rel": float(measured[i] / dense_ms),
            "table_ms": float(predicted[i]),
        })
    return result


def _print_latency(res: dict[str, Any]) -> None:
    print(f"\n## latency on {res['device']} | {res['runtime']} | {res['dtype']} | batch "
          f"{res['batch_size']} | threads {res['threads']} | torch {res['torch']}")
    for key in ("table_error", "raw_table_error", "flops_linear_fit_error"):
        s = res[key]
        print(f"{key:>24}: median {s['median_abs_pct']:.1f}%  p90 {s['p90_abs_pct']:.1f}%  "
              f"max {s['max_abs_pct']:.1f}%  ({res['genomes']} random genomes)")
    print(f"pearson r: latency~table {res['pearson_latency_vs_table']:.3f}, "
          f"latency~MACs {res['pearson_latency_vs_flops']:.3f}")
    print("keep | MACs (M) | MACs rel | measured ms | measured rel | table ms")
    for row in res["uniform"]:
        print(f"{row['keep_ratio']:.1f} | {row['macs_m']:.1f} | {row['macs_rel']:.2f} | "
              f"{row['measured_ms']:.3f} | {row['measured_rel']:.2f} | {row['table_ms']:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. hardware.device=cuda")
    parser.add_argument("--models", nargs="*", default=["resnet20", "resnet56"])
    parser.add_argument("--evals", type=int, default=3, help="timed evaluations per model")
    parser.add_argument("--genomes", type=int, default=50,
                        help="random genomes for the table check")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--cache", default=None,
                        help="latency-table cache folder (default: a fresh temporary one)")
    parser.add_argument("--json", default=None, help="write all figures to this JSON file")
    args = parser.parse_args(argv)

    config = load_config(args.config, args.set)
    torch.set_num_threads(config.hardware.threads)
    print(f"machine: {platform.node()} | {os.cpu_count()} cpus | {device_name('cpu')} | "
          f"torch {torch.__version__} | config {Path(args.config).name} {args.set}", flush=True)
    out: dict[str, Any] = {"config": args.config, "overrides": args.set}
    if not args.skip_eval:
        out["evaluations"] = bench_evaluations(config, args.models, args.evals)
    if not args.skip_latency:
        with tempfile.TemporaryDirectory() as tmp:
            out["latency"] = bench_latency(config, args.genomes, args.cache or tmp)
        _print_latency(out["latency"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
