"""Shared test setup: an absolute PRUNESEARCH_DATA, a marker for tests on real data, and an
exit that skips the interpreter's teardown once the session's verdict is in."""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path

import pytest

# The test process starts and shuts down a dozen local Ray sessions, runs Tune in-process, and
# loads torch, ONNX Runtime, pyarrow and PyG. Ray does not support that pattern cleanly
# (ray-project/ray#31145: core-worker state referenced after ray.shutdown()), and once in CI
# (stop 24, 431 passed) the process then died with SIGSEGV in the interpreter's teardown, after
# pytest had printed its verdict, which turned a passing run into exit code 139. So the process
# ends with pytest's own exit status once every atexit handler has run (Ray's included: this
# one is registered first, so it runs last), skipping only the garbage collection of modules
# and the native libraries' static destructors. A crash during the tests still fails them.
# PRUNESEARCH_TEST_FULL_TEARDOWN=1 keeps the normal teardown (to look for the crash itself).
_SESSION: list[pytest.Session] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    _SESSION[:] = [session]


def _exit_without_teardown() -> None:
    if not _SESSION or os.environ.get("PRUNESEARCH_TEST_FULL_TEARDOWN") == "1":
        return
    status = int(_SESSION[0].exitstatus)  # what pytest returned to `python -m pytest`
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


atexit.register(_exit_without_teardown)

_DATA = os.environ.get("PRUNESEARCH_DATA")
if _DATA:
    # Tests and Ray workers change directories; the data root must not depend on cwd.
    os.environ["PRUNESEARCH_DATA"] = str(Path(_DATA).expanduser().resolve())

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real-data root (../shared/data in CI); tests needing it are skipped without it."""
    root = os.environ.get("PRUNESEARCH_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("PRUNESEARCH_DATA is not set to the real-data folder")
    return Path(root)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
