"""Joining a Ray cluster, or starting a local one, for a run.

Consumes: ``cfg.ray`` and the CPUs the run's actors reserve. Emits: an initialised Ray.
"""

from __future__ import annotations

import os

import numpy as np
import ray

from cluster.config import OniConfig, reserved_cpus


def init_ray(cfg: OniConfig) -> None:
    """Join the configured cluster, or start a local Ray with token authentication on."""
    if ray.is_initialized():
        return
    # Token authentication: Ray 2.60 turns it on for a local Ray by itself (and generates
    # ~/.ray/auth_token); a cluster's nodes decide it with RAY_AUTH_MODE at `ray start`.
    # Setting RAY_AUTH_MODE here would be too late: Ray reads it when it is imported.
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, namespace=cfg.ray.namespace)
        return
    needed = sum(reserved_cpus(cfg).values())
    # Logical CPUs: reserve what the actors ask for even on a 2-core laptop (they time-share).
    num_cpus = cfg.ray.num_cpus or max(os.cpu_count() or 1, int(np.ceil(needed)))
    # address="local": always a Ray of the run's own, never one already on this machine
    # (ray.init() with no address joins the newest local cluster it finds, and then refuses
    # num_cpus). Use ray.address to join one.
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=None if cfg.ray.object_store_mb is None
        else cfg.ray.object_store_mb * 1024 * 1024,
        include_dashboard=cfg.ray.include_dashboard,
        dashboard_host=cfg.ray.dashboard_host,
        namespace=cfg.ray.namespace,
        log_to_driver=True,
    )
