"""CLAD benchmark: learned criterion vs fixed criteria vs the dense model, same epochs.

Pretrained CIFAR-10 ResNet-56, the rate whose MACs reduction is closest to ``--target``
(default 0.53, the paper's ResNet-110 figure, about 2.1x) at ``--granularity``. Every
method runs as the same :class:`~prunesearch.methods.clad.CLADTrial` (``methods/`` code
directly, no Ray): ``learned`` (CLAD: learner epochs, then pruning, then fine-tuning), the fixed
criteria ``l1``, ``l2``, ``fpgm``, ``taylor`` (pruning, then the same fine-tuning) and ``dense``
(rate 0: the unpruned network fine-tuned the same epochs with the same loss).

The issue's target (judged on a GPU run only): CLAD's test accuracy at least the dense
fine-tuned model's, and above every fixed criterion. This script prints the table and the two
differences without judging them.

Default: a reduced budget that finishes within 60 minutes on 2 CPU cores (1 torch thread):
3,000 training images, 2 learner epochs, 3 fine-tune epochs at batch 128, 1,000 validation and
2,000 test images. The full budget (GPU):

    python bench/clad.py --device cuda --train-subset 0 --val-size 5000 --test-subset 0 \\
        --learner-epochs 20 --finetune-epochs 80 --batch-size 512 --lr 0.04 --threads 1

Usage: ``python bench/clad.py [--tiny] [--methods learned,l1,...] [--json out.json]``.
``--tiny`` checks the script in about a minute (ResNet-20, a few batches).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from prunesearch.cluster.config import load_config
from prunesearch.methods.clad import CLADTrial, pruned_groups, rate_for_macs_reduction
from prunesearch.methods.models import CifarResNet, build_model
from prunesearch.methods.pruning import genome_space

METHODS = ("learned", "l1", "l2", "fpgm", "taylor", "dense")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet56")
    p.add_argument("--target", type=float, default=0.53, help="MACs reduction to aim at")
    p.add_argument("--granularity", type=int, default=4)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--train-subset", type=int, default=3000, help="0: all training images")
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--test-subset", type=int, default=2000, help="0: the whole test set")
    p.add_argument("--learner-epochs", type=int, default=2)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--batches-per-epoch", type=int, default=0, help="0: the whole subset")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning SGD learning rate")
    p.add_argument("--learner-lr", type=float, default=0.001)
    p.add_argument("--distill-weight", type=float, default=1000.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--measure-latency", action="store_true",
                   help="also time every final network end to end (CPU, batch 1)")
    p.add_argument("--tiny", action="store_true", help="a one-minute check of the script")
    p.add_argument("--json", type=Path, default=None, help="write the rows here as JSON")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.train_subset, args.val_size, args.test_subset = "resnet20", 256, 200, 200
        args.learner_epochs, args.finetune_epochs, args.batches_per_epoch = 1, 1, 2
        args.batch_size = 32
    return args


def trial_config(args: argparse.Namespace, criterion: str, rate: float):
    clad = {"criterion": "l1" if criterion == "dense" else criterion,
            "rate": 0.0 if criterion == "dense" else rate,
            "learner_epochs": args.learner_epochs, "finetune_epochs": args.finetune_epochs,
            "batch_size": args.batch_size, "lr": args.lr, "learner_lr": args.learner_lr,
            "distill_weight": args.distill_weight, "measure_latency": args.measure_latency,
            "batches_per_epoch": args.batches_per_epoch or None}
    return load_config({
        "method": "clad", "seed": args.seed,
        "data": {"name": "cifar10", "val_size": args.val_size,
                 "train_subset": args.train_subset or None,
                 "test_subset": args.test_subset or None},
        "model": {"name": args.model},
        "hardware": {"device": args.device, "threads": args.threads,
                     "granularity": args.granularity, "batch_size": 1, "warmup": 5,
                     "repeats": 50, "calibration": "none", "calibration_genomes": 0,
                     "table_warmup": 1, "table_repeats": 5},
        "clad": clad,
    })


def run_one(args: argparse.Namespace, criterion: str, rate: float) -> dict:
    config = trial_config(args, criterion, rate)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work_dir:
        trial = CLADTrial(config, work_dir)
        while not trial.done:
            row = trial.step()
            print(f"  {criterion:8s} step {row['step']:3d} {row['phase']:8s} "
                  f"val_acc {row['val_acc']:.4f}  loss {row.get('loss', float('nan')):.4f} "
                  f"({row['wall_s']:.0f} s)", flush=True)
        final = trial.final()
    final["method"] = criterion
    final["wall_s"] = time.perf_counter() - start
    return final


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if not os.environ.get("PRUNESEARCH_DATA"):
        print("set PRUNESEARCH_DATA to the folder holding cifar10-jpeg/ and weights/",
              file=sys.stderr)
        return 2
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        print(f"unknown methods {unknown}; choose from {', '.join(METHODS)}", file=sys.stderr)
        return 2
    model = build_model(args.model)
    assert isinstance(model, CifarResNet)
    space = genome_space(model, args.model, args.granularity)
    rate, reduction = rate_for_macs_reduction(space, pruned_groups(space, "blocks"), args.target)
    print(f"{args.model}: rate {rate:.2f} -> {reduction:.1%} fewer MACs "
          f"({1 / (1 - reduction):.2f}x) at granularity {args.granularity}", flush=True)
    start = time.perf_counter()
    rows = []
    for method in methods:
        rows.append(run_one(args, method, rate))
    total = time.perf_counter() - start

    print(f"\n{'method':8s} {'test_acc':>9s} {'val_acc':>8s} {'pruned_val':>10s} "
          f"{'MACs(M)':>8s} {'reduction':>9s} {'wall_s':>7s}")
    for r in rows:
        print(f"{r['method']:8s} {r['test_acc']:9.4f} {r['val_acc']:8.4f} "
              f"{r.get('val_acc_pruned', float('nan')):10.4f} {r['macs'] / 1e6:8.2f} "
              f"{r['macs_reduction']:9.1%} {r['wall_s']:7.0f}")
    by = {r["method"]: r for r in rows}
    if "learned" in by:
        clad = by["learned"]["test_acc"]
        if "dense" in by:
            print(f"CLAD - dense fine-tuned: {100 * (clad - by['dense']['test_acc']):+.2f} points")
        fixed = [m for m in ("l1", "l2", "fpgm", "taylor") if m in by]
        if fixed:
            best = max(fixed, key=lambda m: by[m]["test_acc"])
            print(f"CLAD - best fixed criterion ({best}): "
                  f"{100 * (clad - by[best]['test_acc']):+.2f} points")
    print(f"total wall time {total:.0f} s ({total / 60:.1f} min); target unjudged here "
          "(judged on a GPU run)")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "rate": rate, "macs_reduction": reduction,
                                         "rows": rows, "wall_s": total}, indent=1,
                                        default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
