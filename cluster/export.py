"""``prunesearch export``: write one front member as a real, smaller ``nn.Module``.

The module is rebuilt from the candidate's replayable recipe and its fine-tuned weights (the very
network that was evaluated), saved as ``--format pt`` (``torch.save``), ``torchscript`` or
``onnx`` (:mod:`prunesearch.methods.export_formats`, which checks the file on reload) together
with ``FILE.recipe.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.methods.errors import UsageError
from prunesearch.methods.io import atomic_write_json

__all__ = ["PICKS", "Budget", "export_member", "member_latency", "pick_member", "read_front",
           "within_budget"]

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


@dataclasses.dataclass(frozen=True)
class Budget:
    """What the shipped network must meet on the device: ``--max-latency-ms``,
    ``--max-memory-mb``, ``--max-error`` (``None``: no limit). Latency is the member's measured
    end-to-end latency where the run re-timed it (``latency_ms_measured``), else its table
    latency (:func:`member_latency`).

    Raises:
        UsageError: a limit that is not a positive number (error: in (0, 1]).
    """

    latency_ms: float | None = None
    memory_mb: float | None = None
    error: float | None = None

    def __post_init__(self) -> None:
        for flag, value in (("--max-latency-ms", self.latency_ms),
                            ("--max-memory-mb", self.memory_mb), ("--max-error", self.error)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UsageError(f"{flag} {value}: must be a positive number")
        if self.error is not None and self.error > 1:
            raise UsageError(f"--max-error {self.error}: an error rate is at most 1")

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.latency_ms, self.memory_mb, self.error))

    def describe(self) -> str:
        parts = [f"{name} <= {value:g}{unit}" for name, value, unit in (
            ("latency", self.latency_ms, " ms"), ("memory", self.memory_mb, " MB"),
            ("error", self.error, "")) if value is not None]
        return ", ".join(parts)

    def misses(self, row: dict[str, Any]) -> list[str]:
        """What ``row`` exceeds, e.g. ``['latency 2.310 ms (measured)']``; empty if it fits."""
        out = []
        latency, source = member_latency(row)
        if self.latency_ms is not None and not latency <= self.latency_ms:
            out.append(f"latency {latency:.3f} ms ({source})")
        if self.memory_mb is not None and not row["memory_mb"] <= self.memory_mb:
            out.append(f"memory {row['memory_mb']:.3f} MB")
        if self.error is not None and not row["error"] <= self.error:
            out.append(f"error {row['error']:.4f}")
        return out


def member_latency(row: dict[str, Any]) -> tuple[float, str]:
    """A member's latency for a budget: measured end to end where re-timed, else the table's."""
    measured = row.get("latency_ms_measured")
    if isinstance(measured, float) and math.isfinite(measured):
        return measured, "measured"
    return row["latency_ms"], "table"


def within_budget(rows: list[dict[str, Any]], budget: Budget) -> list[dict[str, Any]]:
    """The members that meet ``budget``.

    Raises:
        UsageError: none does (the message names the member closest to it on each limit).
    """
    fits = [row for row in rows if not budget.misses(row)]
    if fits:
        return fits
    closest = []
    if budget.latency_ms is not None:
        row = min(rows, key=lambda r: member_latency(r)[0])
        value, source = member_latency(row)
        closest.append(f"the fastest is candidate {row['id']} at {value:.3f} ms ({source})")
    if budget.memory_mb is not None:
        row = min(rows, key=lambda r: r["memory_mb"])
        closest.append(f"the smallest is candidate {row['id']} at {row['memory_mb']:.3f} MB")
    if budget.error is not None:
        row = min(rows, key=lambda r: r["error"])
        closest.append(f"the most accurate is candidate {row['id']} at error {row['error']:.4f}")
    raise UsageError(f"no front member meets {budget.describe()} ({'; '.join(closest)})")


def pick_member(rows: list[dict[str, Any]], pick: str,
                budget: Budget | None = None) -> dict[str, Any]:
    """Choose a front member.

    ``knee``: after min-max normalising error, latency and memory over the front, the member
    closest (Euclidean) to the ideal point. ``best``/``fastest``/``smallest``: lowest error /
    table latency / memory. Otherwise ``pick`` is a candidate id that must be on the front.
    With a ``budget`` the named picks choose among the members that meet it (``best``: the
    most accurate network that fits the device), and a picked id must meet it.
    """
    if budget:
        if pick not in PICKS:
            row = pick_member(rows, pick)
            missed = budget.misses(row)
            if missed:
                raise UsageError(f"--pick {pick}: candidate {row['id']} does not meet "
                                 f"{budget.describe()} ({', '.join(missed)})")
            return row
        rows = within_budget(rows, budget)
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


def saved_network_info(run_dir: Path, cid: int, purpose: str) -> dict[str, Any]:
    """``models/<cid>.json`` of a front member that has a saved network (recipe and weights).

    Raises:
        UsageError: it has none; ``purpose`` ends the message (``export``, ``fine-tune``).
    """
    info_path = Path(run_dir) / "models" / f"{cid}.json"
    if not info_path.exists():
        # A Tune-trial run keeps its front's networks when its report is written.
        hint = ("" if (Path(run_dir) / "journal.jsonl").exists() else
                f"; 'prunesearch report {run_dir}' saves a trial run's front networks from its "
                "trials' last checkpoints")
        raise UsageError(f"candidate {cid} has no saved model in {Path(run_dir) / 'models'}"
                         + hint)
    info = json.loads(info_path.read_text())
    if not info.get("recipe") or not info.get("weights"):
        raise UsageError(f"candidate {cid} was evaluated without a network (synthetic "
                         f"evaluator?): nothing to {purpose}")
    return info


def export_member(run_dir: Path, pick: str, out: Path, *, format: str = "pt",
                  budget: Budget | None = None) -> dict[str, Any]:
    """Rebuild the picked member and save it in ``format`` (checked on reload, see
    :mod:`prunesearch.methods.export_formats`); returns its row plus ``recipe_path``, ``check``
    (the :class:`~prunesearch.methods.export_formats.ExportCheck`) and ``weights``
    (``fine-tuned`` when ``prunesearch finetune`` left weights for it in ``finetuned/``, else
    ``search``, or ``trial`` for a Tune-trial method's network)."""
    import torch

    from prunesearch.methods.export_formats import export_network
    from prunesearch.methods.pruning import load_pruned

    run_dir = Path(run_dir)
    row = pick_member(read_front(run_dir), pick, budget)
    info = saved_network_info(run_dir, row["id"], "export")
    recipe = info["recipe"]
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
