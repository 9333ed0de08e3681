"""``prunesearch export``: write one front member as a real, smaller ``nn.Module``.

The module is rebuilt from the candidate's replayable recipe and its fine-tuned weights (the very
network that was evaluated), saved as ``--format pt`` (``torch.save``), ``torchscript`` or
``onnx`` (:mod:`prunesearch.methods.export_formats`, which checks the file on reload) together
with ``FILE.recipe.json``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.methods.errors import UsageError
from prunesearch.methods.io import atomic_write_json

__all__ = ["PICKS", "export_member", "pick_member", "read_front"]

#: Named picks; anything else must be a candidate id from pareto.csv.
PICKS = ("knee", "best", "fastest", "smallest")


def read_front(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``pareto.csv`` with numeric fields parsed."""
    path = Path(run_dir) / "pareto.csv"
    if not path.exists():
        raise UsageError(f"'{run_dir}' has no pareto.csv yet: run 'prunesearch report {run_dir}'")
    rows = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            parsed: dict[str, Any] = {"id": int(row["id"]), "genome": row["genome"]}
            for key in ("error", "latency_ms", "latency_ms_measured", "memory_mb", "macs", "params"):
                # pareto.csv files written before the rename call the MACs column "flops".
                value = row.get(key, row.get("flops", "") if key == "macs" else "")
                parsed[key] = float(value) if value not in ("", None) else float("nan")
            rows.append(parsed)
    if not rows:
        raise UsageError(f"'{run_dir}/pareto.csv' is empty: the search has no successful candidate")
    return rows


def pick_member(rows: list[dict[str, Any]], pick: str) -> dict[str, Any]:
    """Choose a front member.

    ``knee``: after min-max normalising error, latency and memory over the front, the member
    closest (Euclidean) to the ideal point. ``best``/``fastest``/``smallest``: lowest error /
    table latency / memory. Otherwise ``pick`` is a candidate id that must be on the front.
    """
    if pick in PICKS:
        if pick == "best":
            return min(rows, key=lambda r: (r["error"], r["id"]))
        if pick == "fastest":
            return min(rows, key=lambda r: (r["latency_ms"], r["id"]))
        if pick == "smallest":
            return min(rows, key=lambda r: (r["memory_mb"], r["id"]))
        F = np.array([[r["error"], r["latency_ms"], r["memory_mb"]] for r in rows], dtype=float)
        span = F.max(axis=0) - F.min(axis=0)
        norm = (F - F.min(axis=0)) / np.where(span > 0, span, 1.0)
        return rows[int(np.argmin(np.linalg.norm(norm, axis=1)))]
    try:
        wanted = int(pick)
    except ValueError:
        raise UsageError(f"--pick {pick!r}: use one of {', '.join(PICKS)} or a candidate id "
                         "from pareto.csv") from None
    for row in rows:
        if row["id"] == wanted:
            return row
    ids = ", ".join(str(r["id"]) for r in rows)
    raise UsageError(f"--pick {wanted}: candidate {wanted} is not on the front (front ids: {ids})")


def no_model_hint(run_dir: Path) -> str:
    """What to do when a front member has no saved network: a Tune-trial run keeps its front's
    networks from the trials' checkpoints when its report is written."""
    if (Path(run_dir) / "journal.jsonl").exists():
        return ""
    return (f"; 'prunesearch report {run_dir}' saves a trial run's front networks from its "
            "trials' last checkpoints")


def export_member(run_dir: Path, pick: str, out: Path, *, format: str = "pt") -> dict[str, Any]:
    """Rebuild the picked member and save it in ``format`` (checked on reload, see
    :mod:`prunesearch.methods.export_formats`); returns its row plus ``recipe_path``, ``check``
    (the :class:`~prunesearch.methods.export_formats.ExportCheck`) and ``weights``
    (``fine-tuned`` when ``prunesearch finetune`` left weights for it in ``finetuned/``, else
    ``search``, or ``trial`` for a Tune-trial method's network)."""
    import torch

    from prunesearch.methods.export_formats import export_network
    from prunesearch.methods.pruning import load_pruned

    run_dir = Path(run_dir)
    row = pick_member(read_front(run_dir), pick)
    info_path = run_dir / "models" / f"{row['id']}.json"
    if not info_path.exists():
        raise UsageError(f"candidate {row['id']} has no saved model in {run_dir / 'models'}"
                         + no_model_hint(run_dir))
    info = json.loads(info_path.read_text())
    recipe = info.get("recipe")
    if not recipe or not info.get("weights"):
        raise UsageError(f"candidate {row['id']} was evaluated without a network (synthetic "
                         "evaluator?): nothing to export")
    from prunesearch.cluster.finetune import finetuned_weights

    # The final fine-tune's weights when there are some (same recipe, same architecture).
    tuned = finetuned_weights(run_dir, row["id"])
    if tuned is not None:
        state, source = tuned[1], "fine-tuned"
    else:
        state = torch.load(run_dir / "models" / info["weights"], map_location="cpu",
                           weights_only=True)
        source = "trial" if info.get("trial_id") is not None else "search"
    module = load_pruned(recipe, state)
    module.eval()
    out = Path(out)
    check = export_network(module, out, format=format,
                           input_shape=recipe.get("input_shape") or (3, 32, 32),
                           batch_size=int((info.get("hardware") or {}).get("batch_size") or 1))
    recipe_path = out.with_name(out.name + ".recipe.json")
    atomic_write_json(recipe_path, {"candidate": row, "recipe": recipe, "weights": source},
                      default=str)
    return {**row, "recipe_path": str(recipe_path), "check": check, "weights": source}
