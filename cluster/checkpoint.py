"""The generational driver's checkpoint, ``state/driver.pkl``: sealed, atomic, data-checked.

The exact-resume contract needs the whole pymoo algorithm (RNG, archive, surrogate, portfolio
credit), so the state is pickled; the problem it points to (which holds the task and the base
weights) is left out and plugged back in by the resumed driver. Every file is sealed with this
user's key (:mod:`prunesearch.cluster.sealed`) and written with one atomic replace. Reading
goes in two steps so that a bad file is refused before anything is built or unpickled:
:func:`read_state_blob` verifies the seal (a missing seal, another user's key, a tampered or
truncated file: :class:`~prunesearch.methods.errors.RunStateError`), :func:`load_state`
unpickles the verified bytes.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import time
from pathlib import Path
from typing import Any

from prunesearch.cluster.batch_plan import BatchPlan
from prunesearch.cluster.sealed import seal, unseal
from prunesearch.methods.errors import RunStateError
from prunesearch.methods.io import atomic_write_bytes

__all__ = [
    "AsyncState",
    "CHECKPOINT_PAUSE_ENV",
    "STATE_FILE",
    "STATE_VERSION",
    "DriverState",
    "PendingBatch",
    "load_state",
    "read_state_blob",
    "save_state",
]

#: The checkpoint: algorithm + asked batch + driver bookkeeping (sealed pickle, atomic).
STATE_FILE = "state/driver.pkl"
#: Test hook: seconds to sleep between writing the checkpoint's temp file and replacing the
#: checkpoint with it (lets a test SIGKILL the driver mid-checkpoint). Unset in normal use.
CHECKPOINT_PAUSE_ENV = "PRUNESEARCH_TEST_CHECKPOINT_PAUSE_S"
#: Version 2: sealed (version 1 files were bare pickles and are refused unread).
STATE_VERSION = 2


@dataclasses.dataclass
class PendingBatch:
    """The batch asked and checkpointed but not yet told."""

    generation: int
    pop: Any
    plan: BatchPlan


@dataclasses.dataclass
class AsyncState:
    """The asynchronous loop's bookkeeping (``search.mode: async``), checkpointed with the
    algorithm so that resume replays the journaled tells from exactly here.

    Attributes:
        steady: the :class:`~prunesearch.search.steady_state.SteadyState` around the algorithm.
        slots: candidates kept in flight (the pool size at the start of the run; fixed for the
            run so that a resume on another pool makes the same decisions).
        outstanding: candidate id -> (genome, asked individual) of every candidate asked and
            not yet told, in ask order.
        seen: every genome asked so far (told or outstanding): nothing is asked twice.
        told: candidates told so far.
        tell_groups: groups told so far; the next group's journal lines carry ``tell`` = this.
        empty_asks: asks in a row that proposed nothing new.
        exhausted: the algorithm has nothing new to propose.
    """

    steady: Any
    slots: int
    outstanding: dict[int, tuple[tuple[int, ...], Any]] = dataclasses.field(default_factory=dict)
    seen: set[tuple[int, ...]] = dataclasses.field(default_factory=set)
    told: int = 0
    tell_groups: int = 0
    empty_asks: int = 0
    exhausted: bool = False


@dataclasses.dataclass
class DriverState:
    """Everything the driver needs to continue: the algorithm and its own bookkeeping."""

    algorithm: Any
    pending: PendingBatch | None
    next_id: int = 0
    generation: int = 0  # completed (told) generations
    wall_s: float = 0.0
    idle_generations: int = 0
    finished: bool = False
    #: The asynchronous loop's state (``search.mode: async``); None in generational runs.
    async_state: AsyncState | None = None


_PROBLEM_TOKEN = "prunesearch-problem"


def _dumps(state: Any, problem: Any) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.persistent_id = lambda obj: _PROBLEM_TOKEN if obj is problem else None  # type: ignore[method-assign]
    pickler.dump(state)
    return buffer.getvalue()


def _loads(data: bytes, problem: Any) -> Any:
    unpickler = pickle.Unpickler(io.BytesIO(data))

    def load(pid: Any) -> Any:
        if pid != _PROBLEM_TOKEN:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        return problem

    unpickler.persistent_load = load  # type: ignore[method-assign]
    return unpickler.load()


def _checkpoint_pause(tmp: Path) -> None:
    pause = os.environ.get(CHECKPOINT_PAUSE_ENV)
    if pause:
        time.sleep(float(pause))


def save_state(path: Path, state: DriverState, problem: Any) -> None:
    """Seal and write ``state`` atomically (the problem is stored as a reference only)."""
    data = _dumps({"version": STATE_VERSION, "state": state}, problem)
    atomic_write_bytes(path, seal(data), before_replace=_checkpoint_pause)


def read_state_blob(path: Path) -> bytes | None:
    """The verified pickle bytes of the checkpoint at ``path``; ``None`` if there is none.

    Nothing is unpickled here: the seal is checked first, so a file from someone else, a
    tampered one or garbage is refused before it can run anything.

    Raises:
        RunStateError: the file cannot be read, or its seal does not verify.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise RunStateError(f"{path} cannot be read ({exc.strerror or exc}); start over with "
                            "'prunesearch run CONFIG --overwrite'") from None
    return unseal(blob, source=str(path))


def load_state(data: bytes, problem: Any, *, source: str) -> DriverState:
    """Unpickle verified checkpoint bytes (from :func:`read_state_blob`), plugging in ``problem``.

    Raises:
        RunStateError: the bytes do not hold a driver state of this version.
    """
    try:
        saved = _loads(data, problem)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged pickle raises, it is one line
        raise RunStateError(f"{source} is sealed but cannot be loaded ({type(exc).__name__}: "
                            f"{exc}); it was written by another prunesearch version") from None
    if not isinstance(saved, dict) or saved.get("version") != STATE_VERSION:
        version = saved.get("version") if isinstance(saved, dict) else None
        raise RunStateError(f"{source} has state version {version!r}; this prunesearch reads "
                            f"version {STATE_VERSION}")
    state = saved.get("state")
    if not isinstance(state, DriverState):
        raise RunStateError(f"{source} does not hold a driver state")
    return state
