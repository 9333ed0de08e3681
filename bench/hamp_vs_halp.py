"""HAMP vs HALP (issue 14): the HAMP paper's claim of superiority over HALP, measured.

CPU-scale judged variant (2 cores, within about 60 minutes): the pretrained CIFAR-10 ResNet-20,
CIFAR-10 JPEG images, CPU batch-1 eager latency.

1. HAMP, NSGA-II and random search at the same evaluation budget, through the real driver
   (``run_search``), sharing one latency table (the first run's ``latency_table.json`` and dense
   objectives are copied into the others, so every table latency is comparable).
2. HALP (``run_halp``) at three latency targets spanning HAMP's front (20/50/80% of the way from
   its fastest to its slowest member, in table ms), with the same table.
3. The same final fine-tune (``run_finetune``: epochs, lr, training subset) for every member of
   HAMP's front and every HALP network.
4. All compared networks re-timed end to end, interleaved in rounds, on the idle driver.

Reported: hypervolume of each search front and of the HALP points (search-time objectives,
normalised by the dense model, ARCHITECTURE.md), and for each HALP network the HAMP network at
equal or lower measured latency with the best test accuracy, the accuracy difference, and
whether HAMP dominates it in (test error, measured latency).

Usage::

    .venv/bin/python bench/hamp_vs_halp.py --tiny          # minutes: checks the pipeline only
    .venv/bin/python bench/hamp_vs_halp.py                 # the judged CPU-scale variant
    .venv/bin/python bench/hamp_vs_halp.py --model resnet56 --budget 160 --epochs 30 \\
        --train-subset 0 --halp-steps 30 --halp-interval 40 --halp-finetune 2000

A finished stage is skipped when the script is run again with the same ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from prunesearch.cluster.config import dump_config, load_config

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "configs" / "hamp-resnet56-cifar10.yaml"
SEARCHES = ("hamp", "nsga2", "random")


def _status(run_dir: Path) -> str | None:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()).get("status") if path.exists() else None


def _front(run_dir: Path) -> list[dict[str, Any]]:
    from prunesearch.cluster.export import read_front

    return read_front(run_dir)


def _share_table(source: Path, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("latency_table.json", "dense_objectives.json"):
        if (source / name).exists() and not (run_dir / name).exists():
            shutil.copy2(source / name, run_dir / name)


def _run_search(config: Any, run_dir: Path) -> dict[str, Any]:
    from prunesearch.cluster.driver import run_search

    if _status(run_dir) == "complete":
        return json.loads((run_dir / "summary.json").read_text())
    resume = (run_dir / "state" / "driver.pkl").exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / "config.yaml")
    return run_search(config, run_dir, resume=resume)


def _run_halp(config: Any, run_dir: Path) -> dict[str, Any]:
    from prunesearch.cluster.halp_runner import run_halp

    if _status(run_dir) == "complete":
        return json.loads((run_dir / "summary.json").read_text())
    resume = (run_dir / "journal.jsonl").exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / "config.yaml")
    return run_halp(config, run_dir, resume=resume)


def _finetune(run_dir: Path, epochs: int) -> dict[int, dict[str, Any]]:
    from prunesearch.cluster.finetune import read_finetuned, run_finetune

    done = read_finetuned(run_dir)
    front_ids = {row["id"] for row in _front(run_dir)}
    if not front_ids <= set(done) or any(done[i]["epochs"] != epochs for i in front_ids):
        run_finetune(run_dir, "front", epochs=epochs)
        done = read_finetuned(run_dir)
    return {i: done[i] for i in front_ids}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--budget", type=int, default=24, help="evaluations per search")
    parser.add_argument("--pop", type=int, default=12, help="population / batch size")
    parser.add_argument("--epochs", type=int, default=1, help="final fine-tune epochs")
    parser.add_argument("--train-subset", type=int, default=4000,
                        help="training images of the final fine-tune and HALP (0: all)")
    parser.add_argument("--halp-steps", type=int, default=10)
    parser.add_argument("--halp-interval", type=int, default=10)
    parser.add_argument("--halp-finetune", type=int, default=100,
                        help="HALP iterations after its last pruning step")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-hamp-vs-halp"))
    parser.add_argument("--tiny", action="store_true",
                        help="pipeline check: budget 8, 2 HALP steps, 1 epoch on 256 images")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="further config overrides for every run")
    args = parser.parse_args(argv)
    if args.tiny:
        args.budget, args.pop, args.epochs, args.train_subset = 8, 8, 1, 256
        args.halp_steps, args.halp_interval, args.halp_finetune = 2, 3, 5
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    subset = args.train_subset or None
    overrides = [
        f"model.name={args.model}", f"search.budget={args.budget}",
        f"search.pop_size={args.pop}", f"finetune.epochs={args.epochs}",
        f"finetune.train_subset={subset if subset else 'null'}", "finetune.batch_size=64",
        "finetune.lr=0.01",
        f"data.train_subset={max(subset, 4000) if subset else 'null'}",
        f"halp.pruning_steps={args.halp_steps}", f"halp.interval={args.halp_interval}",
        f"halp.finetune_steps={args.halp_finetune}", "halp.lr=0.005", "halp.batch_size=64",
        *args.set,
    ]
    if args.tiny:
        overrides += ["hardware.repeats=20", "hardware.calibration_genomes=2",
                      "data.val_size=300", "evaluator.finetune_steps=5"]
    base = load_config(BASE_CONFIG, overrides)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    summaries = {}
    for method in SEARCHES:
        run_dir = out / method
        if method != "hamp":
            _share_table(out / "hamp", run_dir)
        t0 = time.perf_counter()
        summaries[method] = _run_search(base.replace(method=method), run_dir)
        timings[method] = time.perf_counter() - t0
        print(f"[{method}] {summaries[method].get('status')}: HV "
              f"{summaries[method].get('hypervolume')}, {timings[method]:.0f}s", flush=True)
        if summaries[method].get("status") != "complete":
            return 130  # interrupted: run the same command again to continue

    hamp_front = _front(out / "hamp")
    lat = sorted(r["latency_ms"] for r in hamp_front)
    lo, hi = lat[0], lat[-1]
    targets = [lo + (hi - lo) * f for f in (0.2, 0.5, 0.8)]
    import dataclasses

    halp_settings = dataclasses.replace(base.halp, latency_targets=tuple(targets),
                                        target_unit="ms")
    _share_table(out / "hamp", out / "halp")
    t0 = time.perf_counter()
    summaries["halp"] = _run_halp(base.replace(method="halp", halp=halp_settings), out / "halp")
    timings["halp"] = time.perf_counter() - t0
    if summaries["halp"].get("status") != "complete":
        return 130
    print(f"[halp] {summaries['halp'].get('status')}: targets "
          + ", ".join(f"{t:.3f}" for t in targets) + f" ms, {timings['halp']:.0f}s", flush=True)

    t0 = time.perf_counter()
    tuned = {"hamp": _finetune(out / "hamp", args.epochs), "halp": _finetune(out / "halp", args.epochs)}
    timings["finetune"] = time.perf_counter() - t0

    # Re-time every compared network together, interleaved, on the idle driver.
    import torch

    from prunesearch.methods.evaluator import PruningTask, time_genomes

    torch.set_num_threads(base.hardware.threads)
    task = PruningTask(base, run_dir=out / "hamp", allow_timing=False)
    members = [("hamp", r) for r in hamp_front] + [("halp", r) for r in _front(out / "halp")]
    genomes = [tuple(int(g) for g in r["genome"].split()) for _, r in members]
    t0 = time.perf_counter()
    measured = time_genomes(task.base_model, task.space, genomes, base.hardware, rounds=5)
    timings["retime"] = time.perf_counter() - t0
    from prunesearch.methods.data import load_dataset
    from prunesearch.methods.evaluator import evaluate_error

    bundle = load_dataset(base.data, seed=base.seed)
    dense_test_acc = 1.0 - evaluate_error(task.base_model, bundle.test)
    dense_ms = time_genomes(task.base_model, task.space, [tuple(task.upper)], base.hardware,
                            rounds=3)[0]

    points = []
    for (method, row), ms in zip(members, measured):
        entry = tuned[method][row["id"]]
        points.append({"method": method, "id": row["id"], "genome": row["genome"],
                       "search_val_error": row["error"], "latency_ms_table": row["latency_ms"],
                       "latency_ms_measured": ms, "val_acc": entry["val_acc"],
                       "test_acc": entry["test_acc"], "params": row["params"],
                       "macs": row.get("macs", row.get("flops"))})
    hamp_points = [p for p in points if p["method"] == "hamp"]
    comparisons = []
    for p in (q for q in points if q["method"] == "halp"):
        faster = [h for h in hamp_points if h["latency_ms_measured"] <= p["latency_ms_measured"]]
        best = max(faster, key=lambda h: h["test_acc"]) if faster else None
        dominated = best is not None and best["test_acc"] >= p["test_acc"] and (
            best["test_acc"] > p["test_acc"] or best["latency_ms_measured"] < p["latency_ms_measured"])
        comparisons.append({"halp": p, "hamp": best, "dominated": bool(dominated),
                            "acc_diff_points": (100 * (best["test_acc"] - p["test_acc"])
                                                if best else None)})
    results = {
        "settings": vars(args), "machine": f"{platform.machine()} {platform.processor() or ''}, "
        "2-core CPU dev machine, shared with parallel work",
        "hypervolume_search": {m: summaries[m].get("hypervolume") for m in (*SEARCHES, "halp")},
        "dense": {"test_acc": dense_test_acc, "latency_ms_measured": dense_ms},
        "halp_targets_ms": targets, "points": points, "comparisons": comparisons,
        "timings_s": timings, "wall_s": time.perf_counter() - started,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    with (out / "points.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(points[0]))
        writer.writeheader()
        writer.writerows(points)

    print(f"\ndense {args.model}: test acc {dense_test_acc:.4f}, {dense_ms:.3f} ms measured")
    print("hypervolume (search objectives): " + ", ".join(
        f"{m} {v:.4f}" if v is not None else f"{m} -" for m, v in
        results["hypervolume_search"].items()))
    print("| HALP target ms | HALP test acc | HALP ms | HAMP id | HAMP test acc | HAMP ms | "
          "diff (points) | dominated |")
    print("|---|---|---|---|---|---|---|---|")
    for c, target in zip(sorted(comparisons, key=lambda c: c["halp"]["latency_ms_table"]),
                         sorted(targets)):
        p, h = c["halp"], c["hamp"]
        hamp_text = (f"{h['id']} | {h['test_acc']:.4f} | {h['latency_ms_measured']:.3f}"
                     if h else "none at or below | - | -")
        diff = f"{c['acc_diff_points']:+.2f}" if h else "-"
        print(f"| {target:.3f} | {p['test_acc']:.4f} | {p['latency_ms_measured']:.3f} | "
              f"{hamp_text} | {diff} | {'yes' if c['dominated'] else 'no'} |")
    wins = sum(c["dominated"] for c in comparisons)
    print(f"HAMP dominates {wins} of {len(comparisons)} HALP networks; wall "
          f"{results['wall_s']:.0f}s; stages: "
          + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
