"""The driver's console: progress lines to the terminal and to ``driver.log``, and SIGTERM
turned into the interrupt every runner already handles."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["RunLog", "sigterm_as_interrupt"]


class RunLog:
    """Prints a line and appends it, time-stamped, to ``driver.log``.

    Args:
        path: the log file (appended: a resumed run continues it).
        sink: where each line is also sent (``print`` on the command line).
    """

    def __init__(self, path: Path, sink: Callable[[str], None]) -> None:
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run
        self._sink = sink

    def __call__(self, line: str) -> None:
        self._sink(line)
        if not self._handle.closed:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._handle.write(f"{stamp} {line}\n")
            self._handle.flush()

    def close(self) -> None:
        """Close the log file (later lines still reach the sink)."""
        self._handle.close()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (``kill``, ``ray job stop``, a scheduler) into KeyboardInterrupt for the
    block, so it is handled like Ctrl-C: state saved, status ``interrupted``, resumable.

    Outside the main thread (where Python cannot install handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
