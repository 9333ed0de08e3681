"""Fixtures shared by the cluster tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _checkpoint_key(tmp_path_factory):
    """Checkpoints of the tests are sealed with a key of their own (never the user's key file
    in ~/.config); subprocess drivers inherit it through the environment."""
    from prunesearch.cluster.sealed import KEY_ENV, KEY_FILE_ENV

    saved = {k: os.environ.get(k) for k in (KEY_ENV, KEY_FILE_ENV)}
    os.environ.pop(KEY_ENV, None)
    os.environ[KEY_FILE_ENV] = str(tmp_path_factory.mktemp("keys") / "checkpoint.key")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray instance (token auth on, as by default) with 8 evaluator slots."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", resources={"evaluator": 8}, num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
