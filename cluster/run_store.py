"""What a search keeps in its run directory besides the journal and the checkpoint.

- ``state/meta.json``: the run's constants (name, method, budget, dense objectives, hardware,
  storage URI, the latency table's content hash and its re-timings). :func:`read_meta` is the
  only reader, :func:`write_meta` the only writer.
- ``summary.json``'s content: :func:`search_summary` is the one builder (the driver's
  per-generation summary and ``report``'s re-rendered one both come from it).
- ``models/``: fine-tuned weights and recipe of the current front members
  (:class:`ModelStore`; weights are read back with ``torch.load(..., weights_only=True)``).
- ``state/measured.json``: end-to-end re-timings of front members.
- ``latency_table.json``: the table the whole search predicts latency with; a resume that finds
  it missing or changed (its SHA-256 differs from the one in ``meta.json``) is refused unless
  the user asks to re-time it (:func:`check_latency_table`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from prunesearch.cluster.journal import to_jsonable
from prunesearch.methods.errors import RunStateError
from prunesearch.methods.io import atomic_write_bytes, atomic_write_text
from prunesearch.methods.task import TABLE_FILE

__all__ = [
    "MEASURED_FILE",
    "META_FILE",
    "TABLE_FILE",
    "ModelStore",
    "check_latency_table",
    "load_weights",
    "read_measured",
    "read_meta",
    "record_table",
    "save_model",
    "search_summary",
    "table_sha256",
    "write_measured",
    "write_meta",
]

META_FILE = "state/meta.json"
MEASURED_FILE = "state/measured.json"


# ---------------------------------------------------------------------------------- meta.json
def read_meta(run_dir: Path) -> dict[str, Any]:
    """``state/meta.json`` (method, dense objectives, hypervolume settings); ``{}`` if absent.

    Raises:
        RunStateError: the file exists but is not a JSON object (a damaged run directory).
    """
    path = Path(run_dir) / META_FILE
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunStateError(f"{path} is not readable ({type(exc).__name__}): the run directory "
                            "is damaged") from None
    if not isinstance(meta, dict):
        raise RunStateError(f"{path} does not hold a JSON object: the run directory is damaged")
    return meta


def write_meta(run_dir: Path, meta: Mapping[str, Any]) -> None:
    """Write ``state/meta.json`` atomically."""
    atomic_write_text(Path(run_dir) / META_FILE, json.dumps(dict(meta), indent=2) + "\n")


# ------------------------------------------------------------------------------ summary.json
def search_summary(meta: Mapping[str, Any], *, status: str, evaluations: int, failed: int,
                   hypervolume: float | None, wall_s: float, generations: int, front_size: int,
                   previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The summary of a generational search (``summary.json``), the only place it is built.

    Args:
        meta: the run's ``meta.json`` (method, budget, dense, run name, storage, table).
        status: running|complete|failed|interrupted.
        evaluations: journaled candidates.
        failed: journaled candidates that failed.
        hypervolume: of the front, normalised by the dense model (``None`` without one).
        wall_s: wall-clock seconds of the search so far (all sessions together).
        generations: completed generations.
        front_size: members of the Pareto front.
        previous: an earlier summary, consulted for fields an old ``meta.json`` lacks.
    """
    previous = previous or {}
    summary: dict[str, Any] = {
        "method": meta.get("method", previous.get("method")),
        "status": status,
        "evaluations": int(evaluations),
        "failed": int(failed),
        "hypervolume": hypervolume,
        "wall_s": round(float(wall_s), 3),
        "generations": int(generations),
        "front_size": int(front_size),
        "budget": meta.get("budget", previous.get("budget")),
        "dense": meta.get("dense"),
        "run_name": meta.get("run_name", previous.get("run_name")),
    }
    if meta.get("device_budget"):
        # search.max_latency_ms / max_memory_mb: no candidate beyond them was evaluated.
        summary["device_budget"] = dict(meta["device_budget"])
    if meta.get("storage_uri"):
        summary["storage_uri"] = meta["storage_uri"]
    if meta.get("latency_table_sha256"):
        summary["latency_table"] = {"sha256": meta["latency_table_sha256"],
                                    "retimed": list(meta.get("latency_table_retimed") or [])}
    return summary


# ------------------------------------------------------------------------------------ models
def save_model(models_dir: Path, record: Mapping[str, Any], result: Mapping[str, Any]) -> None:
    """Keep one candidate's network: ``models/<id>.pt`` (its weights) and ``models/<id>.json``
    (genome, objectives, metrics, hardware and the recipe that rebuilds it), both atomically.
    ``export`` and ``finetune`` read them back."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    cid = int(record["id"])
    weights = result.get("weights")
    if weights:
        import torch

        buffer = io.BytesIO()
        # Copies: arrays from the object store are read-only, which torch warns about.
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, buffer)
        atomic_write_bytes(models_dir / f"{cid}.pt", buffer.getvalue())
    info = {"id": cid, "genome": record["genome"], "channels": record["channels"],
            "objectives": record["objectives"], "metrics": record["metrics"],
            "hardware": record["hardware"], "recipe": result.get("recipe"),
            "weights": f"{cid}.pt" if weights else None}
    if record.get("trial_id") is not None:
        info["trial_id"] = record["trial_id"]  # a Tune-trial method's member: its trial
    atomic_write_text(models_dir / f"{cid}.json", json.dumps(to_jsonable(info), indent=1) + "\n")


def load_weights(models_dir: Path, cid: int) -> dict[str, np.ndarray] | None:
    """The saved weights of candidate ``cid`` as numpy arrays (tensors only: data, never
    code); ``None`` if none were saved."""
    path = Path(models_dir) / f"{cid}.pt"
    if not path.exists():
        return None
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in state.items()}


class ModelStore:
    """``models/``: ``ID.pt`` (fine-tuned weights) and ``ID.json`` (genome, figures, recipe)
    of each current front member."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    def save(self, record: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        """Keep the weights and recipe of a journaled (or about to be journaled) record."""
        save_model(self.models_dir, record, result)

    def prune(self, keep: Iterable[int]) -> None:
        """Delete the files of every candidate not in ``keep`` (those that left the front)."""
        if not self.models_dir.exists():
            return
        keep = set(keep)
        for path in self.models_dir.iterdir():
            stem = path.name.split(".", 1)[0]
            if stem.isdigit() and int(stem) not in keep:
                path.unlink(missing_ok=True)

    def load_weights(self, cid: int) -> dict[str, np.ndarray] | None:
        """See :func:`load_weights`."""
        return load_weights(self.models_dir, cid)


# ---------------------------------------------------------------------------- measured.json
def read_measured(run_dir: Path) -> dict[int, dict[str, float]]:
    """End-to-end measurements of front members by candidate id (``state/measured.json``)."""
    path = Path(run_dir) / MEASURED_FILE
    if not path.exists():
        return {}
    return {int(k): v for k, v in json.loads(path.read_text()).items()}


def write_measured(run_dir: Path, measured: Mapping[Any, Mapping[str, float]]) -> None:
    """Write ``state/measured.json`` atomically (keys: candidate ids)."""
    atomic_write_text(Path(run_dir) / MEASURED_FILE,
                      json.dumps({str(k): dict(v) for k, v in measured.items()}, indent=1) + "\n")


# ------------------------------------------------------------------------- latency_table.json
def table_sha256(run_dir: Path) -> str | None:
    """SHA-256 of ``latency_table.json``; ``None`` if the run has none."""
    path = Path(run_dir) / TABLE_FILE
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_latency_table(run_dir: Path, meta: Mapping[str, Any], *, retime: bool) -> str | None:
    """Decide what a resume does with the run's latency table; call it before the task is built.

    The table fixes every latency the search has told its algorithm; continuing with another
    one would mix two cost models in one front, so a missing or changed table is refused
    unless ``retime`` (then the saved table is removed and the task builds it again). A run
    interrupted before its table was recorded (task preparation) has nothing to check.

    Args:
        run_dir: the run directory.
        meta: its ``meta.json``.
        retime: the user asked to re-time the table (``prunesearch resume --retime-table``).

    Returns:
        Why the table is re-timed (``"missing"``, ``"changed"``, ``"asked"``), or ``None`` when
        the saved table is used as it is.

    Raises:
        RunStateError: the table is missing or changed and ``retime`` is False.
    """
    recorded = meta.get("latency_table_sha256")
    if not recorded:
        return None
    path = Path(run_dir) / TABLE_FILE
    current = table_sha256(run_dir)
    problem = ("missing" if current is None else
               "changed" if current != recorded else None)
    if problem is not None and not retime:
        what = ("is missing" if problem == "missing" else
                "was changed since the run started (its SHA-256 differs from state/meta.json)")
        raise RunStateError(
            f"{path} {what}: resuming with other latencies would mix two cost models in one "
            f"front; re-time it with 'prunesearch resume {run_dir} --retime-table', or start "
            "over with 'prunesearch run CONFIG --overwrite'")
    if not retime:
        return None
    path.unlink(missing_ok=True)
    return problem or "asked"


def record_table(run_dir: Path, meta: dict[str, Any], *, retimed: str | None,
                 evaluations: int) -> None:
    """Record the table's hash in ``meta`` (in place) after the task was built, and the
    re-timing, if there was one (when, why, after how many evaluations)."""
    digest = table_sha256(run_dir)
    if digest is None:
        meta.pop("latency_table_sha256", None)
        return
    meta["latency_table_sha256"] = digest
    if retimed is not None:
        stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        meta.setdefault("latency_table_retimed", []).append(
            {"at": stamp, "reason": retimed, "after_evaluations": int(evaluations)})
