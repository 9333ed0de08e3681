"""ICPG vs random pruning on TU graph classification and Cora (issue 11), no Ray needed.

For every dataset, every fold and every baseline, one ICPG trial (``methods/icpg``) runs
rounds 0..``--rounds`` exactly as a Tune trial would (``make_trial`` then ``step`` per round).
Printed per dataset: per round the nominal and realised graph/weight sparsity, the test
accuracy (mean +- std over folds, validation-based epoch selection unless ``--selection
test_max``) of ICPG and of random pruning, wall seconds per round; then the dense accuracy,
the last matching round (mean accuracy within one std of dense) per baseline and ICPG minus
random over rounds 3-11 (one-sided Wilcoxon signed-rank over folds x rounds).

Default (reduced budget, aimed at about an hour on 2 CPU cores): MUTAG, PROTEINS, NCI1 and Cora;
rounds 0-11; 3 of the 10 stratified folds (Cora: 3 seeds on the public split); 5 mask-learning
+ 20 retraining epochs per round (official: 100 + 100); batch 32 instead of 128 so that the few
epochs still take enough optimiser steps; at most 256 training graphs per epoch (a seeded subset
each epoch; validation and test folds are always scored whole). The official
full-fidelity settings are ``--folds 10 --mask-epochs 100 --eval-epochs 100 --batch-size 128
--max-graphs 0`` (about a day per TU set here).

Usage::

    PRUNESEARCH_DATA=/path/to/data .venv/bin/python bench/icpg.py
    .venv/bin/python bench/icpg.py --datasets MUTAG --folds 2 --rounds 3 --mask-epochs 2 \\
        --eval-epochs 2                                      # a quick check
    .venv/bin/python bench/icpg.py --json runs/icpg-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch

from prunesearch.methods.icpg import ICPG_METHOD, ICPGSettings, dataset_kind
from prunesearch.methods.icpg.settings import BASELINES
from prunesearch.methods.settings import DataSettings, default_data_root


def _run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    node = dataset_kind(name) == "node"
    baselines = list(dict.fromkeys(args.baselines + (["ugs"] if node and args.ugs else [])))
    if not node and "ugs" in baselines:
        baselines.remove("ugs")  # UGS is for the transductive node tasks only
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for fold in range(args.folds):
        for baseline in baselines:
            settings = ICPGSettings(
                rounds=args.rounds, mask_epochs=args.mask_epochs, eval_epochs=args.eval_epochs,
                batch_size=args.batch_size, folds=max(args.cv_folds, args.folds), fold=fold,
                baseline=baseline, selection=args.selection, weight_scope=args.weight_scope,
                max_graphs_per_epoch=args.max_graphs or None, threads=1)
            config = types.SimpleNamespace(icpg=settings, seed=args.seed,
                                           data=DataSettings(name=name, root=args.data_root))
            trial = ICPG_METHOD.make_trial(config, Path("."))
            while not trial.done:
                metrics = trial.step()
                rows.append({"trial_id": f"{name}-{baseline}-{fold}", **metrics})
                print(f"  {name} fold {fold} {baseline:6s} round {metrics['round']:2d}: "
                      f"test {metrics['test_acc']:.3f} val {metrics['val_acc']:.3f} "
                      f"graph sp {metrics['graph_sparsity']:.3f} weight sp "
                      f"{metrics['weight_sparsity']:.3f} ({metrics['wall_s']:.1f} s)", flush=True)
    summary = ICPG_METHOD.summarize(rows)
    summary["wall_s"] = time.perf_counter() - started
    return {"rows": rows, "summary": summary}


def _print_table(name: str, result: dict[str, Any]) -> None:
    summary = result["summary"]
    per = summary["baselines"]
    names = list(per)
    print(f"\n## {name} (selection: {summary.get('selection')}, wall {summary['wall_s']:.0f} s)")
    header = "round | graph sp nominal / realised | weight sp nominal / realised | " + " | ".join(
        f"{b} test acc" for b in names) + " | s/round (icpg)"
    print(header)
    by_round = {b: {r["round"]: r for r in per[b]["rounds"]} for b in names}
    for round_index in sorted(by_round[names[0]]):
        shown = by_round.get("icpg", by_round[names[0]])  # sparsity columns: ICPG's where it ran
        first = shown.get(round_index, by_round[names[0]][round_index])
        accs = " | ".join(
            f"{by_round[b][round_index]['test_acc_mean']:.3f} +- "
            f"{by_round[b][round_index]['test_acc_std']:.3f}" if round_index in by_round[b]
            else "-" for b in names)
        print(f"{round_index:5d} | {first['graph_sparsity_nominal_mean']:.3f} / "
              f"{first['graph_sparsity_mean']:.3f} | {first['weight_sparsity_nominal_mean']:.3f} / "
              f"{first['weight_sparsity_mean']:.3f} | {accs} | {first['wall_s_mean']:.1f}")
    for b in names:
        info = per[b]
        print(f"{b}: dense {info['dense_acc_mean']:.3f} +- {info['dense_acc_std']:.3f}, "
              f"last matching round {info['last_matching_round']}")
    for other, cmp in summary.get("icpg_vs", {}).items():
        p = cmp.get("wilcoxon_p_greater")
        print(f"icpg - {other} over rounds {cmp['rounds']}: {cmp['mean_diff']:+.4f} "
              f"({cmp['pairs']} pairs, one-sided Wilcoxon p = "
              f"{'n/a' if p is None else f'{p:.4f}'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["MUTAG", "PROTEINS", "NCI1", "cora"])
    parser.add_argument("--data-root", default=default_data_root())
    parser.add_argument("--folds", type=int, default=3, help="folds (node tasks: seeds) run")
    parser.add_argument("--cv-folds", type=int, default=10, help="folds of the CV split")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--mask-epochs", type=int, default=5)
    parser.add_argument("--eval-epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-graphs", type=int, default=256,
                        help="training graphs per epoch (0: all)")
    parser.add_argument("--selection", default="val", choices=["val", "test_max"])
    parser.add_argument("--weight-scope", default="global", choices=["global", "layer"],
                        help="weight ranking of both baselines: global (official) or per layer")
    parser.add_argument("--baselines", nargs="+", default=["icpg", "random"],
                        choices=list(BASELINES),
                        help="pruning methods run per fold (rpimp, npimp: the official "
                             "ablations, IMP weights with random or no edge pruning)")
    parser.add_argument("--ugs", action="store_true", help="add UGS on the node tasks")
    parser.add_argument("--seed", type=int, default=666)
    parser.add_argument("--json", help="write rows and summaries to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"# ICPG bench: {platform.node()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
          f"folds {args.folds}/{args.cv_folds}, rounds 0-{args.rounds}, epochs "
          f"{args.mask_epochs}+{args.eval_epochs}, batch {args.batch_size}, max graphs/epoch "
          f"{args.max_graphs or 'all'}, selection {args.selection}, weight scope "
          f"{args.weight_scope}, baselines {' '.join(args.baselines)}", flush=True)
    results = {}
    total = time.perf_counter()
    for name in args.datasets:
        results[name] = _run_dataset(name, args)
        _print_table(name, results[name])
        if args.json:  # after every dataset, so a long run that is stopped keeps what it has
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"args": vars(args), "results": results},
                                                  indent=1))
    print(f"\ntotal wall {time.perf_counter() - total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
