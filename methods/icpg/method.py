"""ICPG as a trial-based method: :data:`ICPG_METHOD` for the Tune runner.

One trial is one (fold, baseline): ``icpg.fold`` and ``icpg.baseline`` applied to the job
config. The default grid covers ``icpg.grid_folds`` (default all ``icpg.folds``) folds times
``icpg.baselines``. :func:`summarize` turns the rows of ``results.csv`` into, per baseline, the
dense accuracy, the accuracy per round (mean and std over folds) and the last matching round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunesearch.methods.errors import UsageError
from prunesearch.methods.icpg.graphs import (
    check_dataset,
    dataset_kind,
    load_graph_set,
    load_node_graph,
)
from prunesearch.methods.icpg.settings import ICPGSettings
from prunesearch.methods.trial import TrialMethod

if TYPE_CHECKING:
    from prunesearch.methods.icpg.trial import GraphTrial, NodeTrial

__all__ = ["ICPG_METHOD", "default_space", "make_trial", "summarize", "validate"]

#: Rounds compared between ICPG and random pruning in the summary (the paper's range).
COMPARE_ROUNDS = range(3, 12)


def _settings(config: Any) -> ICPGSettings:
    settings = getattr(config, "icpg", None)
    return settings if isinstance(settings, ICPGSettings) else ICPGSettings()


def validate(config: Any) -> None:
    """Refuse a config ICPG cannot run, before anything is created.

    Raises:
        DataNotFoundError: ``data.name`` is neither a TU folder under ``data.root/tu`` nor a
            Planetoid set under ``data.root/planetoid`` (the message names the folder).
        UsageError: UGS asked for on a graph-classification dataset.
    """
    check_dataset(config.data.root, config.data.name)
    settings = _settings(config)
    if dataset_kind(config.data.name) == "graph":
        asked = {settings.baseline, *settings.baselines}
        if "ugs" in asked:
            raise UsageError(f"icpg baseline 'ugs' is for the transductive node tasks (cora, "
                             f"citeseer), not the graph dataset '{config.data.name}'; use icpg "
                             f"or random")


def make_trial(config: Any, work_dir: Path | None = None) -> GraphTrial | NodeTrial:
    """The trial for a resolved config with ``icpg.fold`` and ``icpg.baseline`` applied."""
    # PyG is imported here, not at module level: validating a config (the CLI's preflight)
    # stays light and prints nothing but its one-line error.
    from prunesearch.methods.icpg.trial import GraphTrial, NodeTrial

    validate(config)
    settings = _settings(config)
    if dataset_kind(config.data.name) == "node":
        return NodeTrial(settings, load_node_graph(config.data.root, config.data.name),
                         seed=config.seed)
    graphs = load_graph_set(config.data.root, config.data.name, max_degree=settings.max_degree)
    return GraphTrial(settings, graphs, seed=config.seed)


def default_space(config: Any) -> dict[str, list[Any]]:
    """The grid ``icpg.fold`` x ``icpg.baseline`` used when ``tune.space`` is empty."""
    settings = _settings(config)
    folds = settings.grid_folds or settings.folds
    return {"icpg.fold": list(range(folds)), "icpg.baseline": list(settings.baselines)}


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    # Population std over folds, as the ResGCN/ICPG code reports (numpy's default).
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return mean, std


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per baseline: dense accuracy, accuracy per round (mean/std over folds), sparsities and
    the last matching round; plus ICPG vs random (``icpg_vs_random``) and vs every other
    baseline that ran (``icpg_vs``) over rounds 3-11.

    A round *matches* when its mean test accuracy is at least the dense mean minus the dense
    std (over folds); the last matching round is the highest such round (``None`` if none).
    Rows are those of ``results.csv``; a (baseline, fold, round) reported twice (a restored
    trial) counts once, the last report.
    """
    latest: dict[tuple[str, int, int], Mapping[str, Any]] = {}
    for row in rows:
        baseline = row.get("baseline", row.get("icpg.baseline"))
        fold, round_index = _number(row.get("fold", row.get("icpg.fold"))), _number(row.get("round"))
        if baseline is None or fold is None or round_index is None:
            continue
        latest[(str(baseline), int(fold), int(round_index))] = row
    summary: dict[str, Any] = {"baselines": {}}
    selections = {str(r.get("selection")) for r in latest.values() if r.get("selection")}
    if selections:
        summary["selection"] = min(selections) if len(selections) == 1 else sorted(selections)
        if "test_max" in selections:
            summary["selection_note"] = "test_max picks epochs on the test fold: optimistic"
    for baseline in sorted({key[0] for key in latest}):
        per_round: dict[int, dict[str, list[float]]] = {}
        for (b, _fold, round_index), row in sorted(latest.items()):
            if b != baseline:
                continue
            slot = per_round.setdefault(round_index, {})
            for name in ("test_acc", "val_acc", "weight_sparsity", "graph_sparsity",
                         "weight_sparsity_nominal", "graph_sparsity_nominal", "wall_s"):
                value = _number(row.get(name))
                if value is not None:
                    slot.setdefault(name, []).append(value)
        rounds = []
        for round_index in sorted(per_round):
            slot = per_round[round_index]
            if not slot.get("test_acc"):
                continue
            mean, std = _mean_std(slot["test_acc"])
            entry = {"round": round_index, "test_acc_mean": mean, "test_acc_std": std,
                     "folds": len(slot["test_acc"])}
            for name in ("val_acc", "weight_sparsity", "graph_sparsity",
                         "weight_sparsity_nominal", "graph_sparsity_nominal", "wall_s"):
                if slot.get(name):
                    entry[f"{name}_mean"] = _mean_std(slot[name])[0]
            rounds.append(entry)
        dense = next((r for r in rounds if r["round"] == 0), None)
        last_matching = None
        if dense is not None:
            threshold = dense["test_acc_mean"] - dense["test_acc_std"]
            matching = [r for r in rounds if r["round"] >= 1 and r["test_acc_mean"] >= threshold]
            last_matching = matching[-1] if matching else None
        summary["baselines"][baseline] = {
            "dense_acc_mean": dense["test_acc_mean"] if dense else None,
            "dense_acc_std": dense["test_acc_std"] if dense else None,
            "rounds": rounds,
            "last_matching_round": last_matching["round"] if last_matching else None,
            "last_matching": last_matching,
        }
    comparison = _compare(latest, "icpg", "random")
    if comparison is not None:
        summary["icpg_vs_random"] = comparison
    # ICPG against every other baseline that ran (the ablations isolate its parts: ``rpimp``
    # differs from ICPG in the edges chosen and the weights' source, ``npimp`` prunes no edge).
    others = sorted({key[0] for key in latest} - {"icpg"})
    comparisons = {b: c for b in others if (c := _compare(latest, "icpg", b)) is not None}
    if comparisons:
        summary["icpg_vs"] = comparisons
    return summary


def _compare(latest: Mapping[tuple[str, int, int], Mapping[str, Any]], a: str,
             b: str) -> dict[str, Any] | None:
    """Paired test accuracy of ``a`` minus ``b`` over (fold, round) in rounds 3-11."""
    diffs = []
    for (baseline, fold, round_index), row in latest.items():
        if baseline != a or round_index not in COMPARE_ROUNDS:
            continue
        other = latest.get((b, fold, round_index))
        x, y = _number(row.get("test_acc")), _number(other.get("test_acc")) if other else None
        if x is not None and y is not None:
            diffs.append(x - y)
    if not diffs:
        return None
    result: dict[str, Any] = {"rounds": f"{COMPARE_ROUNDS.start}-{COMPARE_ROUNDS.stop - 1}",
                              "pairs": len(diffs), "mean_diff": sum(diffs) / len(diffs)}
    if any(d != 0 for d in diffs):
        from scipy.stats import wilcoxon

        result["wilcoxon_p_greater"] = float(wilcoxon(diffs, alternative="greater").pvalue)
    return result


ICPG_METHOD = TrialMethod(
    name="icpg",
    section="icpg",
    make_trial=make_trial,
    metric="val_acc",
    mode="max",
    default_space=default_space,
    summarize=summarize,
    validate=validate,
    pruning=False,
)
