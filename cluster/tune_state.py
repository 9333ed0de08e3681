"""A Tune run directory read as data only: what ``resume`` and ``report`` of a trial-based
method know about the trials, without ever unpickling anything.

Ray Tune keeps its own experiment state as cloudpickle (``tuner.pkl``, the trials' pickled
parts in ``experiment_state-*.json``, ``params.pkl``, the searcher's state); restoring it with
``Tuner.restore`` runs code chosen by whoever wrote the directory. prunesearch never reads
those files. Everything it needs is in plain data files that Tune and the runner write anyway:

- each trial folder's ``result.json`` (one JSON object per reported step: the trial's config,
  its metrics, ``done`` and the ``checkpoint_dir_name`` of the step's checkpoint) and
  ``params.json`` (the trial's config, written when it starts);
- each checkpoint's ``state.pt``, loaded with ``torch.load(..., weights_only=True)``.

A run directory holds one Tune experiment per attempt: ``tune/experiment`` (the first run),
``tune/experiment-1``, ``tune/experiment-2``, ... (one per ``resume``). A trial continued by a
later attempt carries the id of the trial it continues under :data:`RESUME_KEY` in its config,
so its steps are reported under one trial id whatever attempt ran them.

The order Tune writes things in makes the last readable line of ``result.json`` safe to resume
from after a SIGKILL at any moment: a step's checkpoint is persisted before its result is sent
to the driver, the driver appends (and flushes) the result line before it deletes the older
checkpoint, and a torn last line is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunesearch.methods.errors import RunStateError

__all__ = [
    "EXPERIMENT_NAME",
    "PROGRESS_FILE",
    "RESUME_KEY",
    "STATE_FILE",
    "TrialRecord",
    "experiment_dirs",
    "experiment_name",
    "iter_trial_results",
    "load_progress",
    "load_state",
    "next_attempt",
    "read_trials",
    "trial_id_of",
]

#: The first attempt's Tune experiment folder under ``RUN_DIR/tune/``.
EXPERIMENT_NAME = "experiment"
#: Config key of a trial that continues one of an earlier attempt (value: that trial's id).
RESUME_KEY = "_prunesearch_trial"
#: The trial's state inside each checkpoint (``torch.save`` of plain data and tensors).
STATE_FILE = "state.pt"
#: Beside it: the trial's config, step, done, every step's metrics so far, its final figures
#: (when done) and the size and SHA-256 of ``state.pt`` (a torn copy is told from a whole one).
PROGRESS_FILE = "progress.json"

_ATTEMPT = re.compile(rf"^{EXPERIMENT_NAME}(?:-([1-9][0-9]{{0,5}}))?$")
_CHECKPOINT = re.compile(r"^checkpoint_[0-9]{1,9}$")
# Tune's trial ids: 8 hex digits (a searcher's trials) or 5 hex + 5 digits (variant generator).
_TRIAL_ID = re.compile(r"^_run_one_trial_([0-9a-f]{8}|[0-9a-f]{5}_[0-9]{5})_")


def trial_id_of(config: Any, last_result: Any, folder: Path) -> str:
    """The id a trial is recorded under: the trial it continues (:data:`RESUME_KEY` in its
    config), else Tune's id for it (its results', else its folder's)."""
    origin = config.get(RESUME_KEY) if isinstance(config, dict) else None
    if isinstance(origin, str) and origin:
        return origin
    if isinstance(last_result, dict) and isinstance(last_result.get("trial_id"), str):
        return last_result["trial_id"]
    match = _TRIAL_ID.match(folder.name)
    return match.group(1) if match else folder.name


def experiment_name(attempt: int) -> str:
    """The Tune experiment folder of attempt ``attempt`` (0: the first run)."""
    return EXPERIMENT_NAME if attempt == 0 else f"{EXPERIMENT_NAME}-{attempt}"


def experiment_dirs(tune_root: Path) -> list[Path]:
    """The attempts' experiment folders under ``tune_root``, oldest first."""
    found: list[tuple[int, Path]] = []
    with contextlib.suppress(OSError):
        for path in Path(tune_root).iterdir():
            match = _ATTEMPT.match(path.name)
            if match and path.is_dir() and not path.is_symlink():
                found.append((int(match.group(1) or 0), path))
    return [path for _, path in sorted(found)]


def next_attempt(tune_root: Path) -> int:
    """The number of the next attempt (one past the newest folder, whatever it holds)."""
    dirs = experiment_dirs(tune_root)
    if not dirs:
        return 0
    match = _ATTEMPT.match(dirs[-1].name)
    return int(match.group(1) or 0) + 1 if match else 0


def _json_lines(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue  # a torn last line from a killed driver
            if isinstance(value, dict):
                rows.append(value)
    return rows


def _json_file(path: Path) -> Any:
    with contextlib.suppress(OSError, UnicodeDecodeError, ValueError):
        return json.loads(path.read_text(encoding="utf-8"))
    return None


def _checkpoints(folder: Path) -> list[Path]:
    found = []
    with contextlib.suppress(OSError):
        found = [p for p in folder.iterdir()
                 if _CHECKPOINT.match(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: int(p.name.rsplit("_", 1)[1]))


def _progress(checkpoint: Path) -> dict[str, Any] | None:
    value = _json_file(checkpoint / PROGRESS_FILE)
    return value if isinstance(value, dict) else None


def iter_trial_results(tune_root: Path) -> Iterator[tuple[int, Path, str, dict[str, Any],
                                                          list[dict[str, Any]]]]:
    """``(attempt, trial_folder, trial_id, params, results)`` of every trial folder of every
    attempt, oldest attempt first. ``trial_id`` is the id of the trial as first started (a
    continued trial's :data:`RESUME_KEY`); ``params`` its config without that key; ``results``
    its readable ``result.json`` lines in order, then the rows of its checkpoints'
    ``progress.json`` (Tune copies ``result.json`` from the driver to the run directory now and
    then, while checkpoints are written there directly, so after a crash the newest rows may
    be in the checkpoints only). Folders without a readable config (a trial killed before it
    wrote anything) are skipped."""
    for attempt, experiment in enumerate(experiment_dirs(tune_root)):
        folders: list[Path] = []
        with contextlib.suppress(OSError):
            folders = sorted(p for p in experiment.iterdir()
                             if p.is_dir() and not p.is_symlink())
        for folder in folders:
            results = _json_lines(folder / "result.json")
            progress = [p for p in map(_progress, _checkpoints(folder)) if p is not None]
            config = results[-1].get("config") if results else None
            for candidate in (_json_file(folder / "params.json"),
                              *(p.get("config") for p in reversed(progress))):
                if not isinstance(config, dict):
                    config = candidate
            if not isinstance(config, dict):
                continue
            params = {k: v for k, v in config.items() if k != RESUME_KEY}
            trial_id = trial_id_of(config, results[-1] if results else None, folder)
            rows = list(results)
            for entry in progress:
                rows.extend({**row, "config": config} for row in entry.get("rows") or ()
                            if isinstance(row, dict))
            yield attempt, folder, trial_id, params, rows


@dataclass
class TrialRecord:
    """What the run directory says about one trial, over every attempt that ran it."""

    trial_id: str
    params: dict[str, Any]
    #: The folder of the newest attempt that ran the trial.
    path: Path
    #: The checkpoint the trial continues from (its newest complete one), if any.
    checkpoint: Path | None = None
    #: That checkpoint's ``progress.json`` (step, done, rows, final).
    progress: dict[str, Any] | None = None
    #: The trial's furthest readable ``result.json`` line, if any.
    last: dict[str, Any] | None = None
    #: Why the trial cannot be continued (a damaged or missing checkpoint), if so.
    damaged: str | None = None
    order: tuple[int, int] = (0, 0)
    folders: list[Path] = field(default_factory=list)

    @property
    def done(self) -> bool:
        source = self.progress if self.progress is not None else self.last
        return bool(source is not None and source.get("done") is True)

    @property
    def step(self) -> int | None:
        source = self.progress if self.progress is not None else self.last
        step = (source or {}).get("step")
        return step if isinstance(step, int) and not isinstance(step, bool) else None

    @property
    def final(self) -> dict[str, Any] | None:
        final = (self.progress or {}).get("final")
        if isinstance(final, dict):
            return final
        text = (self.last or {}).get("final")
        if isinstance(text, str):
            with contextlib.suppress(ValueError):
                value = json.loads(text)
                return value if isinstance(value, dict) else None
        return None

    @property
    def metrics(self) -> dict[str, Any] | None:
        """The metrics of the trial's furthest step (its last row)."""
        rows = (self.progress or {}).get("rows")
        if isinstance(rows, list) and rows and isinstance(rows[-1], dict):
            return rows[-1]
        return self.last


def _step_of(result: dict[str, Any] | None) -> float:
    step = (result or {}).get("step")
    return float(step) if isinstance(step, (int, float)) else -1.0


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _complete(checkpoint: Path) -> dict[str, Any] | None:
    """The checkpoint's progress if it is whole: ``progress.json`` readable and ``state.pt``
    exactly the bytes it was written with (size and SHA-256)."""
    progress = _progress(checkpoint)
    state = checkpoint / STATE_FILE
    if progress is None or not state.is_file():
        return None
    with contextlib.suppress(OSError):
        if state.stat().st_size != progress.get("state_bytes"):
            return None
    if _sha256(state) != progress.get("state_sha256"):
        return None
    return progress


def _choose_checkpoint(record: TrialRecord, named: set[str]) -> None:
    """The newest checkpoint of the trial over all its folders. Only the newest can be torn by
    a crash (the trial's steps run one after another; an older checkpoint is deleted only once
    a newer one is whole), and a torn one was never reported (Tune sends a step's result only
    after its checkpoint is written): such a one is skipped. Any other that is not whole is
    damaged (refused)."""
    candidates = [c for folder in record.folders for c in _checkpoints(folder)]
    for index, checkpoint in enumerate(reversed(candidates)):
        progress = _complete(checkpoint)
        if progress is not None:
            record.checkpoint, record.progress = checkpoint, progress
            return
        if (str(checkpoint) in named and _progress(checkpoint) is None
                and not (checkpoint / PROGRESS_FILE).exists()
                and (checkpoint / STATE_FILE).is_file()):
            record.checkpoint = checkpoint  # written before progress.json existed
            return
        if index == 0 and str(checkpoint) not in named:
            continue  # torn by a crash while it was written
        record.damaged = (f"trial {record.trial_id}: checkpoint {checkpoint} is damaged or was "
                          "changed (its state.pt does not match its progress.json); it is "
                          "never loaded: start again with 'prunesearch run CONFIG --overwrite'")
        return
    if any(Path(name).parent in record.folders for name in named):
        record.damaged = (f"trial {record.trial_id}: the checkpoints its results name are "
                          "missing; the run directory is damaged: start again with "
                          "'prunesearch run CONFIG --overwrite'")


def read_trials(tune_root: Path) -> dict[str, TrialRecord]:
    """Every trial of every attempt, by trial id (reads data files only, never raises)."""
    records: dict[str, TrialRecord] = {}
    named: set[str] = set()
    for index, (attempt, folder, trial_id, params, results) in enumerate(
            iter_trial_results(tune_root)):
        record = records.get(trial_id)
        if record is None:
            record = records[trial_id] = TrialRecord(trial_id=trial_id, params=params,
                                                     path=folder, order=(attempt, index))
        record.path = folder
        record.folders.append(folder)
        for result in results:
            name = result.get("checkpoint_dir_name")
            if isinstance(name, str) and _CHECKPOINT.match(name):
                named.add(str(folder / name))
            # A later attempt continues from the earlier one's last step: it wins once it has
            # reported anything (ties too: its line is newer).
            if record.last is None or _step_of(result) >= _step_of(record.last):
                record.last = result
    for record in records.values():
        _choose_checkpoint(record, named)
    return records


def _read_bytes(location: str) -> bytes:
    if "://" in location:
        from pyarrow import fs as pafs

        filesystem, path = pafs.FileSystem.from_uri(location)
        with filesystem.open_input_stream(path) as stream:
            return stream.readall()
    return Path(location).read_bytes()


def load_progress(location: str) -> dict[str, Any]:
    """The ``progress.json`` of the checkpoint folder ``location`` ({} if there is none)."""
    try:
        value = json.loads(_read_bytes(f"{location.rstrip('/')}/{PROGRESS_FILE}"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def load_state(location: str) -> Any:
    """A trial state saved by the runner, from a local path or a storage URI, loaded with
    ``torch.load(..., weights_only=True)`` (tensors and plain containers only: a file that
    would run code is refused by torch's restricted unpickler).

    Raises:
        RunStateError: the file is missing, unreadable, or not a data-only torch file.
    """
    import torch

    try:
        data = _read_bytes(location)
    except (OSError, ValueError) as exc:
        raise RunStateError(f"trial checkpoint {location} is not readable "
                            f"({type(exc).__name__}): the run directory is damaged; start "
                            "again with 'prunesearch run CONFIG --overwrite'") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on a refused file: the error says
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch says, the file is refused
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise RunStateError(f"trial checkpoint {location} is damaged or not a data-only "
                            f"state ({type(exc).__name__}: {reason}); it is never loaded as "
                            "code: start again with 'prunesearch run CONFIG --overwrite'"
                            ) from None
