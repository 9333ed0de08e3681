"""Run directories that nobody can lose or hijack: a lock, and ``--overwrite`` that keeps the
old run until the new one has really started.

The lock is an exclusive ``fcntl.flock`` on ``RUN_DIR/.lock``, taken before anything else is
done in the directory and held by the CLI process for the whole ``run``, ``resume``,
``finetune`` or ``report``. The kernel drops it when the process dies, however it dies, so a
stale lock from a killed process never blocks; the file holds the holder's PID for the message
a second process gets. Ray's own processes do not inherit it (Python opens files
non-inheritable).

``--overwrite`` moves the old run aside (``.NAME.replaced-PID``, a sibling, so the move is one
atomic rename) instead of deleting it; :meth:`NewRun.commit` deletes it once the new run has
really started (it evaluated something, or ended normally), :meth:`NewRun.rollback` puts it
back when the new run was refused (bad input found while building the task, interrupted before
anything was evaluated).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from prunesearch.methods.errors import PrunesearchError, RunStateError, UsageError
from prunesearch.methods.io import rename_dir

__all__ = ["LOCK_NAME", "NewRun", "RunDirLock", "new_run_dir"]

LOCK_NAME = ".lock"


class RunDirLock:
    """Exclusive lock on a run directory (see the module docstring).

    Raises:
        RunStateError: another live process holds it (the message names its PID).
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunDirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise RunStateError(f"run directory '{self.run_dir}' is in use by {who}; wait for "
                                "it to finish or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunDirLock:
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        return int(os.read(fd, 32).decode().strip() or "0") or None
    return None


class NewRun:
    """A freshly created, locked run directory, and the old run it may replace."""

    def __init__(self, run_dir: Path, lock: RunDirLock, aside: Path | None) -> None:
        self.run_dir = run_dir
        self.lock = lock
        self.aside = aside

    def commit(self) -> None:
        """The new run has started: the old one (if any) is gone for good."""
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    def rollback(self) -> None:
        """The new run was refused: remove what it wrote and put the old run back."""
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.aside is not None:
            rename_dir(self.aside, self.run_dir)
            self.aside = None

    def settle(self, exc: BaseException | None) -> None:
        """Once the new run has ended (``exc`` is ``None``) or raised ``exc``: keep it, or put
        the old run back when it was refused for bad input (found while building the task,
        say) or crashed with an old run set aside, before it evaluated anything."""
        refused = isinstance(exc, PrunesearchError) and exc.exit_code == 2
        if exc is not None and not self.started() and (refused or self.aside is not None):
            self.rollback()
        else:
            self.commit()

    def started(self) -> bool:
        """Whether the new run got far enough that it is worth keeping: it journaled an
        evaluation, or checkpointed a search or a Tune experiment."""
        journal = self.run_dir / "journal.jsonl"
        return ((journal.exists() and journal.stat().st_size > 0)
                or (self.run_dir / "state").is_dir() and any((self.run_dir / "state").iterdir())
                or (self.run_dir / "tune").is_dir())


def _default_run_dir(stem: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stem}-{stamp}"


def new_run_dir(output: str | None, stem: str, *, overwrite: bool) -> NewRun:
    """Create (or, with ``overwrite``, replace) a run directory and lock it.

    Nothing is deleted here: an old run is moved aside and deleted by :meth:`NewRun.commit`.

    Raises:
        UsageError: the path is a file, exists without ``overwrite``, or is not writable.
        RunStateError: the existing run is in use by a live process.
    """
    run_dir = (Path(output) if output else _default_run_dir(stem)).expanduser().resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"output '{run_dir}' exists and is not a directory")
    aside: Path | None = None
    if run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        if not overwrite:
            raise UsageError(f"run directory '{run_dir}' already exists; pass --overwrite to "
                             f"replace it or 'prunesearch resume {run_dir}' to continue it")
        with RunDirLock(run_dir):  # refuses a live run; released before the move
            aside = run_dir.with_name(f".{run_dir.name}.replaced-{os.getpid()}")
            if aside.exists():
                shutil.rmtree(aside)
            try:
                rename_dir(run_dir, aside)
            except OSError as exc:
                raise UsageError(f"cannot replace '{run_dir}': {exc.strerror or exc}") from None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
        lock = RunDirLock(run_dir).acquire()
    except RunStateError:
        if aside is not None:
            rename_dir(aside, run_dir)
        raise
    except OSError as exc:
        if aside is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
            rename_dir(aside, run_dir)
        raise UsageError(f"output directory '{run_dir}' is not writable: "
                         f"{exc.strerror or exc}") from None
    return NewRun(run_dir, lock, aside)


def lock_existing(run_dir: Path) -> RunDirLock:
    """Lock an existing run directory (``resume``, ``finetune``, ``report``)."""
    try:
        return RunDirLock(run_dir).acquire()
    except PermissionError as exc:
        raise UsageError(f"run directory '{run_dir}' is not writable: "
                         f"{exc.strerror or exc}") from None
