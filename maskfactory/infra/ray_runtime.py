"""Connect to Ray: the cluster ``RAY_ADDRESS`` names, or a small local one on this machine.

Production sets ``RAY_ADDRESS`` (``ray://head:10001`` or ``auto`` on a cluster node); the demo and a
laptop get a local cluster with this machine's CPUs and no dashboard, bound to loopback.
"""

from __future__ import annotations

import os


def ensure_ray(num_cpus: int | None = None) -> None:
    """Initialise Ray once per process; a no-op when it is already initialised."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    ray.init(
        num_cpus=num_cpus or os.cpu_count() or 1,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
