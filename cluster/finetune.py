"""``prunesearch finetune``: the final fine-tune of chosen front members, on Ray.

Every picked member (``knee``, ``best``, ``fastest``, ``smallest``, a candidate id, or the whole
``front``) is rebuilt from ``models/<id>`` (its recipe and search weights) and fully fine-tuned
by :func:`~prunesearch.methods.finetune.final_finetune` in its own Ray task, all members in
parallel (each holds one unit of the custom ``evaluator`` resource, and a GPU when
``cluster.num_gpus`` asks for one). Without ``address`` (or ``RAY_ADDRESS``) a private local Ray
instance is started. Workers checkpoint each epoch under ``finetuned/<id>.ckpt.pt`` (so the run
directory must be on a filesystem the workers share: local Ray, or a cluster's shared volume);
running the same command again continues every unfinished member from its last epoch.

Results: ``finetuned/<id>.pt`` (weights), ``finetuned/<id>.json`` (recipe and figures) and
``finetuned.csv``, one row per fine-tuned member. The test split is evaluated here and nowhere
else: the search never saw it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.cluster.actors import resource_options
from prunesearch.cluster.export import (
    PICKS,
    Budget,
    pick_member,
    read_front,
    saved_network_info,
    within_budget,
)
from prunesearch.cluster.journal import atomic_write_bytes, atomic_write_text, to_jsonable
from prunesearch.methods.errors import UsageError

__all__ = [
    "FINETUNED_COLUMNS",
    "FINETUNE_PICKS",
    "finetune_member",
    "finetuned_weights",
    "read_finetuned",
    "run_finetune",
    "select_members",
]

#: ``--pick`` values besides a candidate id.
FINETUNE_PICKS = (*PICKS, "front")
#: Columns of ``finetuned.csv``.
FINETUNED_COLUMNS = ("id", "genome", "test_acc", "val_acc", "search_val_acc", "macs", "params",
                     "latency_ms", "latency_ms_measured", "epochs", "distill")
FINETUNED_DIR = "finetuned"


def select_members(run_dir: Path, pick: str, budget: Budget | None = None
                   ) -> list[dict[str, Any]]:
    """The ``pareto.csv`` rows ``pick`` names, each checked to have a saved network; with a
    ``budget``, among the members that meet it (``front``: every such member).

    Raises:
        UsageError: unknown pick, an id not on the front or over the budget, no member within
            the budget, or a member without saved weights.
    """
    rows = read_front(run_dir)
    picks = [p.strip() for p in pick.split(",")] if "," in pick else [pick]
    for one in picks:
        if one != "front" and one not in PICKS:
            try:
                int(one)
            except ValueError:
                raise UsageError(f"--pick {one!r}: use one of {', '.join(FINETUNE_PICKS)}, a "
                                 "candidate id from pareto.csv, or ids separated by commas"
                                 ) from None
    if "front" in picks:
        chosen = within_budget(rows, budget) if budget else rows
    else:
        chosen = list({row["id"]: row for row in (pick_member(rows, one, budget)
                                                  for one in picks)}.values())
    for row in chosen:
        saved_network_info(run_dir, row["id"], "fine-tune")
    return sorted(chosen, key=lambda r: r["id"])


def _settings_key(settings: Any) -> dict[str, Any]:
    return to_jsonable(dataclasses.asdict(settings))


def member_seed(seed: int, cid: int) -> int:
    """The fine-tune seed of member ``cid``: a function of the run seed and the id only, so a
    resumed fine-tune continues with the data order it started with."""
    from prunesearch.cluster.driver import candidate_seed

    # Offset: never the seed the member's search evaluation used.
    return candidate_seed(seed, 1_000_000 + int(cid))


#: The last dataset loaded in this process, by (data settings, seed): Ray reuses a worker
#: process for the next member, which then skips decoding the images again.
_BUNDLE_CACHE: dict[Any, Any] = {}


def _bundle(data: Any, seed: int) -> Any:
    from prunesearch.methods.data import load_dataset

    key = (data, int(seed))
    if key not in _BUNDLE_CACHE:
        _BUNDLE_CACHE.clear()
        _BUNDLE_CACHE[key] = load_dataset(data, seed=int(seed))
    return _BUNDLE_CACHE[key]


def finetune_member(config: Any, run_dir: str, cid: int, settings: Any, *, seed: int,
                    device: str, threads: int,
                    on_epoch: Callable[[int, dict[str, float]], None] | None = None
                    ) -> dict[str, Any]:
    """Fine-tune one saved member (runs on a Ray worker; plain function, callable in-process).

    ``on_epoch(epoch, record)`` is called after each epoch's checkpoint.

    Returns:
        ``{"id", "weights" (numpy), "val_acc", "search_val_acc", "test_acc", "epochs",
        "resumed_from", "history", "wall_s"}``.
    """
    import torch

    from prunesearch.methods.evaluator import evaluate_error
    from prunesearch.methods.finetune import final_finetune
    from prunesearch.methods.models import load_base_model
    from prunesearch.methods.pruning import load_pruned

    start = time.perf_counter()
    torch.set_num_threads(int(threads))
    run = Path(run_dir)
    info = json.loads((run / "models" / f"{cid}.json").read_text())
    state = torch.load(run / "models" / info["weights"], map_location="cpu", weights_only=True)
    module = load_pruned(info["recipe"], state)
    bundle = _bundle(config.data, int(config.seed))
    train = bundle.train
    if settings.train_subset is not None and settings.train_subset < len(train):
        rng = np.random.default_rng(np.random.SeedSequence([int(config.seed), 23]))
        train = train.subset(np.sort(rng.choice(len(train), settings.train_subset, replace=False)))
    search_val_acc = 1.0 - evaluate_error(module, bundle.val)
    teacher = None
    if settings.distill != "none":
        teacher = load_base_model(config.model, config.data, seed=int(config.seed))
    out_dir = run / FINETUNED_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / f"{cid}.ckpt.pt"
    ckpt_meta = out_dir / f"{cid}.ckpt.json"
    key = _settings_key(settings)
    if ckpt.exists() and (not ckpt_meta.exists()
                          or json.loads(ckpt_meta.read_text()) != key):
        ckpt.unlink()  # a checkpoint of other settings: start over rather than mix the two
    atomic_write_text(ckpt_meta, json.dumps(key) + "\n")
    device_t = torch.device(device)
    result = final_finetune(module, train, settings, seed=seed, teacher=teacher,
                            augment=settings.augmentation and bundle.augmentable,
                            device=device_t, checkpoint=ckpt, on_epoch=on_epoch)
    module = result.module.cpu().eval()
    val_acc = 1.0 - evaluate_error(module, bundle.val)
    test_acc = 1.0 - evaluate_error(module, bundle.test)
    return {"id": int(cid), "weights": {k: v.numpy() for k, v in module.state_dict().items()},
            "val_acc": float(val_acc), "search_val_acc": float(search_val_acc),
            "test_acc": float(test_acc), "epochs": int(result.epochs),
            "resumed_from": int(result.resumed_from), "history": result.history,
            "wall_s": time.perf_counter() - start}


def _save_result(run_dir: Path, row: dict[str, Any], result: dict[str, Any],
                 settings: Any) -> dict[str, Any]:
    import torch

    out_dir = run_dir / FINETUNED_DIR
    cid = int(result["id"])
    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in result["weights"].items()}, buffer)
    atomic_write_bytes(out_dir / f"{cid}.pt", buffer.getvalue())
    info = json.loads((run_dir / "models" / f"{cid}.json").read_text())
    entry = {
        "id": cid, "genome": row["genome"], "test_acc": result["test_acc"],
        "val_acc": result["val_acc"], "search_val_acc": result["search_val_acc"],
        "macs": row.get("macs", row.get("flops")), "params": row.get("params"),
        "latency_ms": row.get("latency_ms"), "latency_ms_measured": row.get("latency_ms_measured"),
        "epochs": result["epochs"], "distill": settings.distill,
        "settings": _settings_key(settings), "history": result["history"],
        "recipe": info["recipe"], "weights": f"{cid}.pt", "wall_s": result["wall_s"],
    }
    atomic_write_text(out_dir / f"{cid}.json", json.dumps(to_jsonable(entry), indent=1) + "\n")
    for stale in (out_dir / f"{cid}.ckpt.pt", out_dir / f"{cid}.ckpt.json"):
        stale.unlink(missing_ok=True)
    return entry


def read_finetuned(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Every fine-tuned member of a run by id (``finetuned/<id>.json``); ``{}`` if none."""
    out_dir = Path(run_dir) / FINETUNED_DIR
    if not out_dir.is_dir():
        return {}
    found = {}
    for path in out_dir.glob("*.json"):
        if path.stem.isdigit() and (out_dir / f"{path.stem}.pt").exists():
            found[int(path.stem)] = json.loads(path.read_text())
    return found


def _write_csv(run_dir: Path) -> Path:
    entries = sorted(read_finetuned(run_dir).values(), key=lambda e: e["id"])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FINETUNED_COLUMNS)
    for entry in entries:
        writer.writerow(["" if entry.get(c) is None or (isinstance(entry.get(c), float)
                                                        and not np.isfinite(entry[c]))
                         else entry[c] for c in FINETUNED_COLUMNS])
    path = run_dir / "finetuned.csv"
    atomic_write_text(path, buffer.getvalue())
    return path


def _check_feature_maps(run_dir: Path, members: list[dict]) -> None:
    """Attention distillation matches spatial feature maps: refuse it, before anything starts,
    for a network whose inputs are feature vectors (an MLP has none)."""
    for row in members:
        info = run_dir / "models" / f"{row['id']}.json"
        if not info.is_file():
            continue
        shape = json.loads(info.read_text()).get("recipe", {}).get("input_shape") or ()
        if len(shape) == 1:
            raise UsageError(f"distill attention (--distill, finetune.distill) matches feature "
                             f"maps, and this network takes feature vectors {tuple(shape)}; "
                             "use kd or none")


def run_finetune(run_dir: Path, pick: str, *, epochs: int | None = None,
                 distill: str | None = None, address: str | None = None,
                 log: Callable[[str], None] = print, budget: Budget | None = None
                 ) -> list[dict[str, Any]]:
    """Fine-tune the picked members of a run directory in parallel on Ray.

    Every input is checked before anything is written or started.

    Args:
        run_dir: a run directory with ``config.yaml``, ``pareto.csv`` and ``models/``.
        pick: ``knee``, ``best``, ``fastest``, ``smallest``, ``front`` or a candidate id.
        epochs: overrides ``finetune.epochs``.
        distill: overrides ``finetune.distill`` (``none``, ``kd``, ``attention``).
        address: Ray cluster to join (default ``RAY_ADDRESS``, else a private local instance).
        log: receives one line per member.
        budget: pick among the members that meet it (:class:`~.export.Budget`).

    Returns:
        The ``finetuned/<id>.json`` entries of the picked members.

    Raises:
        UsageError: a bad run directory, pick, epoch count or distillation mode.
    """
    import ray

    from prunesearch.cluster.config import load_config
    from prunesearch.cluster.driver import connect_ray
    from prunesearch.methods.settings import DISTILL_MODES

    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise UsageError(f"run directory '{run_dir}' does not exist")
    if not (run_dir / "config.yaml").exists():
        raise UsageError(f"'{run_dir}' is not a prunesearch run directory (no config.yaml)")
    if epochs is not None and epochs < 1:
        raise UsageError(f"--epochs {epochs}: must be at least 1")
    if distill is not None and distill not in DISTILL_MODES:
        raise UsageError(f"--distill {distill!r}: use one of {', '.join(DISTILL_MODES)}")
    import yaml

    config = load_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    members = select_members(run_dir, pick, budget)
    changes = {k: v for k, v in (("epochs", epochs), ("distill", distill)) if v is not None}
    settings = dataclasses.replace(config.finetune, **changes)
    if settings.distill == "attention":
        _check_feature_maps(run_dir, members)
    cluster = config.cluster
    device = "cuda" if cluster.num_gpus > 0 else "cpu"

    was_connected = ray.is_initialized()
    connect_ray(address, config)
    try:
        options = {**resource_options(cluster), "max_retries": cluster.max_retries}
        remote = ray.remote(finetune_member).options(**options)
        rows = {row["id"]: row for row in members}
        pending = {}
        for row in members:
            ref = remote.remote(config, str(run_dir), row["id"], settings,
                                seed=member_seed(config.seed, row["id"]),
                                device=device, threads=config.hardware.threads)
            pending[ref] = row["id"]
        log(f"fine-tuning {len(members)} member(s) ({', '.join(map(str, rows))}) for "
            f"{settings.epochs} epochs, distill {settings.distill}, on "
            f"{'GPU' if device == 'cuda' else 'CPU'} Ray workers")
        entries, failed = [], []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cid = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                # The others go on; this member's last epoch checkpoint stays for a re-run.
                failed.append(cid)
                log(f"candidate {cid}: fine-tune failed: {str(exc).strip().splitlines()[-1]}")
                continue
            entry = _save_result(run_dir, rows[cid], result, settings)
            entries.append(entry)
            resumed = (f", resumed from epoch {result['resumed_from']}"
                       if result["resumed_from"] else "")
            log(f"candidate {cid}: val acc {result['search_val_acc']:.4f} -> "
                f"{result['val_acc']:.4f}, test acc {result['test_acc']:.4f} "
                f"({result['epochs']} epochs{resumed}, {result['wall_s']:.0f}s)")
            _write_csv(run_dir)
        if failed:
            raise RuntimeError(f"fine-tuning failed for candidates {failed} (see above); "
                               "running the command again resumes them")
    finally:
        if not was_connected and ray.is_initialized():
            ray.shutdown()
    return sorted(entries, key=lambda e: e["id"])


def finetuned_weights(run_dir: Path, cid: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(entry, state_dict)`` of a fine-tuned member, or ``None`` when it has none."""
    entry = read_finetuned(run_dir).get(int(cid))
    if entry is None:
        return None
    import torch

    state = torch.load(Path(run_dir) / FINETUNED_DIR / entry["weights"], map_location="cpu",
                       weights_only=True)
    return entry, state
