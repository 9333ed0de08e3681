"""Benchmark: HAMP vs NSGA-II and Optuna's TPE on a real network, pretrained CIFAR-10 ResNet-20.

The expensive objective is real: each candidate is pruned physically (L1 importance), its BN
statistics are recalibrated on ``bn_recalibration_batches`` training batches and its validation
error is measured on ``data.val_size`` images carved from the training set, with **no
fine-tuning** (``evaluator.finetune_steps: 0``). Latency (the calibrated per-layer table, CPU,
batch 1, 1 thread) and memory are the cheap objectives, exactly as in a search. A candidate's
BN batches are seeded by its genome, so a genome always gets the same error, and evaluations
are cached by genome across algorithms, seeds and reruns (``--cache``).

Hypervolume: objectives divided by the dense network's (error: dense error + an allowance,
the same evaluation), reference 1.0. The allowance of the search's measure, 0.10, leaves
almost every un-fine-tuned prune outside the box (what NSGA-II and TPE evaluate: 0.85 median
error, chance 0.90), so each figure is also given at 0.50 (``--error-allowance``). Reported
per algorithm: median HV at ``--budget`` over the seeds, HAMP's ratio to each peer, Wilcoxon
signed-rank (paired by seed), Holm-corrected.

Finished runs are appended to ``--runs`` and skipped when the command is run again, and the
workers' cache files survive an interrupted chunk, so the benchmark can run in chunks (e.g.
under ``timeout``) and resumes where it stopped; ``--report-only`` reports what is there.

Usage::

    PRUNESEARCH_DATA=/path/to/data python bench/resnet20_real.py --seeds 5 --jobs 2
    PRUNESEARCH_DATA=/path/to/data python bench/resnet20_real.py --algorithms nsga2 tpe
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

OVERRIDES = {
    "model": {"name": "resnet20"},
    "data": {"val_size": 300, "train_subset": 1000},
    "evaluator": {"finetune_steps": 0, "bn_recalibration_batches": 4, "batch_size": 64},
    "hardware": {"calibration_genomes": 3, "repeats": 30},
}
ALGORITHMS = ("hamp", "nsga2", "tpe")

_TASK: dict[str, Any] = {}


def _genome_id(genome: np.ndarray) -> int:
    digest = hashlib.blake2b(np.asarray(genome, dtype=np.int64).tobytes(), digest_size=4)
    return int.from_bytes(digest.digest(), "little") % (2**31 - 1)


def build_task(root: str, table_dir: str):
    """The PruningTask (pretrained ResNet-20, table built once and shared) and an evaluator."""
    import torch

    from prunesearch.cluster.config import load_config
    from prunesearch.methods.evaluator import CandidateEvaluator, PruningTask

    torch.set_num_threads(1)
    overrides = json.loads(json.dumps(OVERRIDES))
    overrides["data"]["root"] = root
    config = load_config(REPO / "configs" / "hamp-resnet56-cifar10.yaml", overrides)
    task = PruningTask(config, run_dir=table_dir)
    return task, CandidateEvaluator(task.payload())


class RealProblemCache:
    """Genome -> validation error, evaluated on demand, persisted as JSON lines."""

    def __init__(self, evaluator, path: Path | None) -> None:
        self.evaluator, self.path = evaluator, path
        self.errors: dict[tuple[int, ...], float] = {}
        self.evaluated = 0
        self.eval_s = 0.0
        if path is not None and path.is_file():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                self.errors[tuple(row["genome"])] = float(row["error"])

    def __call__(self, X: np.ndarray) -> np.ndarray:
        out = []
        for x in np.atleast_2d(np.asarray(X, dtype=int)):
            key = tuple(int(v) for v in x)
            if key not in self.errors:
                start = time.perf_counter()
                result = self.evaluator.evaluate(list(key), candidate_id=_genome_id(x), seed=0)
                self.eval_s += time.perf_counter() - start
                self.evaluated += 1
                error = result["objectives"]["error"] if result["status"] == "ok" else 1.0
                self.errors[key] = float(error)
                if self.path is not None:
                    with self.path.open("a") as fh:
                        fh.write(json.dumps({"genome": list(key), "error": error}) + "\n")
            out.append([self.errors[key]])
        return np.array(out)


def _cache_parts(cache: Path) -> list[Path]:
    """The shared cache file and every worker's part file (left by an interrupted chunk)."""
    parts = sorted(cache.parent.glob(f"{cache.stem}.*{cache.suffix}"))
    return ([cache] if cache.is_file() else []) + parts


def _worker_init(root: str, table_dir: str, cache: str | None, worker_files: bool) -> None:
    task, evaluator = build_task(root, table_dir)
    path = Path(cache) if cache else None
    known: dict[tuple[int, ...], float] = {}
    if path is not None:
        for part in _cache_parts(path):
            known.update(RealProblemCache(None, part).errors)
    if path is not None and worker_files:
        path = path.with_name(f"{path.stem}.{os.getpid()}{path.suffix}")
    _TASK.update(task=task, cache=RealProblemCache(evaluator, path), table_dir=table_dir)
    _TASK["cache"].errors.update(known)


def make_problem():
    from prunesearch.search import GenomeProblem

    task, cache = _TASK["task"], _TASK["cache"]
    return GenomeProblem(task.lower, task.upper, n_obj=3, cheap_objectives=(1, 2),
                         cheap_fn=task.evaluate_cheap, expensive_fn=cache)


def run_one(job: tuple[str, int, int]) -> dict[str, Any]:
    from pruning_like import build, run_tpe
    from pymoo.optimize import minimize

    name, seed, budget = job
    problem = make_problem()
    cache = _TASK["cache"]
    before, before_s = cache.evaluated, cache.eval_s
    start = time.perf_counter()
    if name == "tpe":
        F = run_tpe(problem, seed, budget)
    else:
        F = minimize(problem, build(name, {}), ("n_evals", budget), seed=seed).algorithm.archive_F
    return {"algorithm": name, "seed": seed, "F": F, "wall_s": time.perf_counter() - start,
            "table": str(Path(_TASK["table_dir"]) / "latency_table.json"),
            "new_evals": cache.evaluated - before, "eval_s": cache.eval_s - before_s}


def main() -> int:
    from pruning_like import holm, hv_at
    from scipy.stats import wilcoxon

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=160)
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "prunesearch" / "bench"
                                               / "resnet20-real-v1.jsonl"))
    parser.add_argument("--runs", default=str(Path.home() / ".cache" / "prunesearch" / "bench"
                                              / "resnet20-real-runs-v1.jsonl"),
                        help="finished runs (JSON lines); runs found there are not run again, "
                             "so an interrupted or chunked benchmark resumes")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing; report the seeds every algorithm has finished")
    parser.add_argument("--error-allowance", type=float, nargs="+", default=[0.10, 0.50],
                        help="HV reference error(s) = dense error + this; 0.10 is the search's "
                             "default measure, which few un-fine-tuned prunes reach")
    parser.add_argument("--table-dir", default=None,
                        help="where the latency table is built once and reused (default: next "
                             "to --cache)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.seeds < 1 or args.budget < 1 or args.jobs < 1:
        parser.error("--seeds, --budget and --jobs must be >= 1")
    unknown = sorted(set(args.algorithms) - set(ALGORITHMS))
    if unknown:
        parser.error(f"unknown algorithms {unknown}; valid: {', '.join(ALGORITHMS)}")
    root = os.environ.get("PRUNESEARCH_DATA", str(Path.home() / ".cache/prunesearch/data"))
    Path(args.cache).parent.mkdir(parents=True, exist_ok=True)
    # One latency table for every chunk and algorithm: a table timed again would be another
    # problem (its cheap objectives move by several per cent between timings).
    table_dir = args.table_dir or str(Path(args.cache).with_suffix("")) + "-table"
    Path(table_dir).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    task, _ = build_task(root, table_dir)  # builds and saves the table once
    build_s = time.perf_counter() - start
    dense = task.dense_objectives()
    print(f"task build {build_s:.1f} s; dense {dense}; {len(task.lower)} genes", flush=True)
    runs_path = Path(args.runs)
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, int, int], dict[str, Any]] = {}
    if runs_path.is_file():
        for line in runs_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                r["F"] = np.array(r["F"], dtype=float)
                done[(r["algorithm"], r["seed"], r["budget"])] = r
    jobs = [(a, s, args.budget) for s in range(args.seeds) for a in args.algorithms
            if (a, s, args.budget) not in done]
    print(f"{len(jobs)} runs to do, {len(done)} found in {runs_path}", flush=True)
    start = time.perf_counter()
    if jobs and not args.report_only:
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(args.jobs, len(jobs)), initializer=_worker_init,
                      initargs=(root, table_dir, args.cache, True)) as pool:
            for r in pool.imap_unordered(run_one, jobs, chunksize=1):
                r["budget"] = args.budget
                done[(r["algorithm"], r["seed"], args.budget)] = r
                with runs_path.open("a") as fh:  # one line per finished run: resumable
                    fh.write(json.dumps({**r, "F": np.asarray(r["F"]).tolist()}) + "\n")
                print(f"  done {r['algorithm']} seed {r['seed']}: {r['wall_s']:.0f} s, "
                      f"{r['new_evals']} new evaluations ({r['eval_s']:.0f} s)", flush=True)
    wall = time.perf_counter() - start
    # Merge the workers' cache files into the shared one.
    cache_path = Path(args.cache)
    merged: dict[tuple[int, ...], float] = {}
    parts = _cache_parts(cache_path)
    for part in parts:
        merged.update(RealProblemCache(None, part).errors)
    cache_path.write_text("".join(json.dumps({"genome": list(k), "error": v}) + "\n"
                                  for k, v in merged.items()))
    for part in parts:
        if part != cache_path:
            part.unlink()
    ran = [r for r in done.values() if r["budget"] == args.budget]
    seeds = [s for s in range(args.seeds)
             if all((a, s, args.budget) in done for a in args.algorithms)]
    if not seeds:
        print("no seed finished by every algorithm yet")
        return 0
    report: dict[str, Any] = {"dense": dense, "seeds": seeds, "budget": args.budget}
    for allowance in args.error_allowance:
        ref = np.array([dense["error"] + allowance, dense["latency_ms"], dense["memory_mb"]])
        hv = {a: {s: hv_at(done[(a, s, args.budget)]["F"], ref, args.budget) for s in seeds}
              for a in args.algorithms}
        medians = {a: float(np.median(list(v.values()))) for a, v in hv.items()}
        print(f"\nResNet-20 real problem, budget {args.budget}, {len(seeds)} seeds, HV reference "
              f"error = dense {dense['error']:.3f} + {allowance:.2f}: median HV "
              + ", ".join(f"{a} {m:.4f}" for a, m in medians.items()))
        report[f"allowance_{allowance:.2f}"] = {"medians": medians, "hv": hv,
                                                "ref": ref.tolist()}
        peers = [a for a in args.algorithms if a != "hamp"]
        if "hamp" in hv and len(seeds) >= 2:
            tests = []
            for a in peers:
                h = np.array([hv["hamp"][s] for s in seeds])
                o = np.array([hv[a][s] for s in seeds])
                tests.append(1.0 if np.allclose(h, o) else float(wilcoxon(h, o).pvalue))
            for a, p, q in zip(peers, tests, holm(tests)):
                ratio = medians["hamp"] / medians[a] if medians[a] else float("inf")
                print(f"  HAMP/{a} {ratio:.3f} (p {p:.3f}, Holm {q:.3f}); per seed "
                      + " ".join(f"{hv['hamp'][s]:.4f}/{hv[a][s]:.4f}" for s in seeds))
    lowest = {a: float(np.median([np.min(done[(a, s, args.budget)]["F"][:args.budget, 0])
                                  for s in seeds])) for a in args.algorithms}
    print("median over seeds of the lowest error found: "
          + ", ".join(f"{a} {v:.3f}" for a, v in lowest.items()))
    new = sum(r["new_evals"] for r in ran)
    eval_s = sum(r["eval_s"] for r in ran)
    print(f"this chunk: {len(jobs) if not args.report_only else 0} runs in {wall:.0f} s with "
          f"{args.jobs} processes; all recorded runs: {new} genomes evaluated for real "
          f"({eval_s / max(new, 1):.2f} s wall each, {eval_s:.0f} s in all), the rest from the "
          f"cache ({len(merged)} genomes cached)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
