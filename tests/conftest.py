"""Shared test setup: an absolute PRUNESEARCH_DATA and a marker for tests on real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
