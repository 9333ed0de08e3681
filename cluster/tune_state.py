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
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunesearch.methods.errors import RunStateError

__all__ = [
    "EXPERIMENT_NAME",
    "RESUME_KEY",
    "STATE_FILE",
    "TrialRecord",
    "experiment_dirs",
    "experiment_name",
    "iter_trial_results",
    "load_state",
    "next_attempt",
    "read_trials",
]

#: The first attempt's Tune experiment folder under ``RUN_DIR/tune/``.
EXPERIMENT_NAME = "experiment"
#: Config key of a trial that continues one of an earlier attempt (value: that trial's id).
RESUME_KEY = "_prunesearch_trial"
#: The trial's state inside each checkpoint (``torch.save`` of plain data and tensors).
STATE_FILE = "state.pt"

_ATTEMPT = re.compile(rf"^{EXPERIMENT_NAME}(?:-([1-9][0-9]{{0,5}}))?$")
_CHECKPOINT = re.compile(r"^checkpoint_[0-9]{1,9}$")
_TRIAL_ID = re.compile(r"^_run_one_trial_([0-9a-f]+_[0-9]+)_")


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


def iter_trial_results(tune_root: Path) -> Iterator[tuple[int, Path, str, dict[str, Any],
                                                          list[dict[str, Any]]]]:
    """``(attempt, trial_folder, trial_id, params, results)`` of every trial folder of every
    attempt, oldest attempt first. ``trial_id`` is the id of the trial as first started (a
    continued trial's :data:`RESUME_KEY`); ``params`` its config without that key; ``results``
    its readable ``result.json`` lines in order. Folders without a readable config (a trial
    killed before it wrote ``params.json``, and that never reported) are skipped."""
    for attempt, experiment in enumerate(experiment_dirs(tune_root)):
        folders: list[Path] = []
        with contextlib.suppress(OSError):
            folders = sorted(p for p in experiment.iterdir()
                             if p.is_dir() and not p.is_symlink())
        for folder in folders:
            results = _json_lines(folder / "result.json")
            config = results[-1].get("config") if results else None
            if not isinstance(config, dict):
                config = _json_file(folder / "params.json")
            if not isinstance(config, dict):
                continue
            params = {k: v for k, v in config.items() if k != RESUME_KEY}
            origin = config.get(RESUME_KEY)
            if isinstance(origin, str) and origin:
                trial_id = origin
            elif results and isinstance(results[-1].get("trial_id"), str):
                trial_id = results[-1]["trial_id"]
            else:
                match = _TRIAL_ID.match(folder.name)
                trial_id = match.group(1) if match else folder.name
            yield attempt, folder, trial_id, params, results


@dataclass
class TrialRecord:
    """What the run directory says about one trial, over every attempt that ran it."""

    trial_id: str
    params: dict[str, Any]
    #: The folder of the newest attempt that ran the trial.
    path: Path
    #: The trial's furthest readable result (its last reported step), if any.
    last: dict[str, Any] | None = None
    #: The folder holding the checkpoint ``last`` names, if any.
    last_folder: Path | None = None
    order: tuple[int, int] = (0, 0)
    attempts: list[int] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return bool(self.last is not None and self.last.get("done") is True)

    @property
    def step(self) -> int | None:
        step = (self.last or {}).get("step")
        return step if isinstance(step, int) and not isinstance(step, bool) else None

    @property
    def final(self) -> dict[str, Any] | None:
        text = (self.last or {}).get("final")
        if isinstance(text, str):
            with contextlib.suppress(ValueError):
                value = json.loads(text)
                return value if isinstance(value, dict) else None
        return None

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint folder of the last reported step (None: nothing checkpointed)."""
        name = (self.last or {}).get("checkpoint_dir_name")
        if self.last_folder is None or not isinstance(name, str) or not _CHECKPOINT.match(name):
            return None
        return self.last_folder / name


def _step_of(result: dict[str, Any]) -> float:
    step = result.get("step")
    return float(step) if isinstance(step, (int, float)) else -1.0


def read_trials(tune_root: Path) -> dict[str, TrialRecord]:
    """Every trial of every attempt, by trial id (reads data files only, never raises)."""
    records: dict[str, TrialRecord] = {}
    for index, (attempt, folder, trial_id, params, results) in enumerate(
            iter_trial_results(tune_root)):
        record = records.get(trial_id)
        if record is None:
            record = records[trial_id] = TrialRecord(trial_id=trial_id, params=params,
                                                     path=folder, order=(attempt, index))
        record.path = folder
        record.attempts.append(attempt)
        if results:
            last = results[-1]
            # A later attempt continues from the earlier one's last step: it wins once it
            # has reported anything (ties too: its line is newer).
            if record.last is None or _step_of(last) >= _step_of(record.last):
                record.last, record.last_folder = last, folder
    return records


def _read_bytes(location: str) -> bytes:
    if "://" in location:
        from pyarrow import fs as pafs

        filesystem, path = pafs.FileSystem.from_uri(location)
        with filesystem.open_input_stream(path) as stream:
            return stream.readall()
    return Path(location).read_bytes()


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
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch says, the file is refused
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise RunStateError(f"trial checkpoint {location} is damaged or not a data-only "
                            f"state ({type(exc).__name__}: {reason}); it is never loaded as "
                            "code: start again with 'prunesearch run CONFIG --overwrite'"
                            ) from None
