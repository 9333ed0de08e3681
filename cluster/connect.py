"""Connecting the driver to Ray, and what the joined cluster must offer the config."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from prunesearch.methods.errors import UsageError

__all__ = ["check_cluster_device", "cluster_address", "connect_ray"]


def cluster_address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS``; ``None`` (or ``"local"``) means
    a private local instance."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    return None if address == "local" else address


def connect_ray(address: str | None, config: Any) -> bool:
    """Connect this process to Ray.

    Joins the cluster named by ``address`` or ``RAY_ADDRESS``; otherwise starts a private local
    instance (``address="local"``: a bare ``ray.init()`` would silently join any head left
    running on the machine) that declares the custom ``evaluator`` resource for the pool.
    An already connected process is left as it is. Ray's token authentication stays as
    configured (on by default).

    Args:
        address: a Ray address (``ray://...``, ``host:port``, ``auto``) or ``None``.
        config: the job config (``cluster`` section: pool size, dashboard, object store).

    Returns:
        True if this call started a local Ray instance.
    """
    import ray

    if ray.is_initialized():
        return False
    address = cluster_address(address)
    if address:
        _init_keeping_sigterm(ray, address=address, log_to_driver=True)
        return False
    cluster = config.cluster
    kwargs: dict[str, Any] = {
        "address": "local",
        "include_dashboard": bool(cluster.dashboard),
        "log_to_driver": True,
    }
    units = cluster.num_evaluators * cluster.evaluator_resource
    if units > 0:
        kwargs["resources"] = {"evaluator": float(units)}
    if cluster.object_store_mb:
        kwargs["object_store_memory"] = int(cluster.object_store_mb) * 1024 * 1024
    _init_keeping_sigterm(ray, **kwargs)
    return True


def _init_keeping_sigterm(ray: Any, **kwargs: Any) -> None:
    """``ray.init`` installs its own SIGTERM handler (exit 15); a handler the caller set before
    (the CLI's SIGTERM-as-interrupt) is put back, so SIGTERM still ends the command as
    ``interrupted`` with exit 130 whenever it comes."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    ray.init(**kwargs)
    if main and callable(previous):
        signal.signal(signal.SIGTERM, previous)


def check_cluster_device(config: Any) -> None:
    """Refuse a CUDA ``hardware.device`` on a connected cluster that has no GPU resources.

    On a private local instance the CLI's preflight has already checked this machine; on a
    joined cluster only Ray knows what the nodes hold, so this runs right after connecting,
    before the evaluator pool asks for GPUs that would never come (the run would hang).

    Raises:
        UsageError: the device is ``cuda`` and ``ray.cluster_resources()`` lists no GPU.
    """
    import ray

    device = str(config.hardware.device)
    if not device.startswith("cuda"):
        return
    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    if gpus <= 0:
        raise UsageError(f"hardware.device {device!r}: the Ray cluster has no GPU resources "
                         "(ray.cluster_resources() lists none); use cpu, or join a cluster "
                         "with GPU nodes")
