"""Fixtures shared by the cluster tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray instance (token auth on, as by default) with 8 evaluator slots."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", resources={"evaluator": 8}, num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
