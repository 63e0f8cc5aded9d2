"""This command's Ray driver: the one way the ``smoke`` commands connect to Ray.

Always with an explicit address (never ``"auto"``, which ignores a custom temp dir
and joins whatever cluster ``ray start`` last left on the host). Inside ``ray job
submit`` the job runtime sets ``RAY_ADDRESS``, which :func:`address_of` picks up, so
every command also runs as a job on the cluster it is submitted to. The packages
below (``actors``, ``serve``, ``train``) never connect themselves: their entry
points expect a connected driver.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from ingest.broker import port_open


class DriverError(RuntimeError):
    """No Ray to connect to; the message says what to pass."""


def address_of(given: str | None, configured: str | None) -> str | None:
    """``--address``, else ``RAY_ADDRESS`` (set inside a Ray job), else ``ray.address``.

    A ``RAY_ADDRESS`` of the job API (``http://head:8265``, as users export it for
    ``ray job submit``) is not a driver address and is passed over.
    """
    from_job = os.environ.get("RAY_ADDRESS", "")
    return given or (from_job if from_job and not from_job.startswith(("http://", "https://")) else None) \
        or configured


def connect_driver(address: str | None, namespace: str) -> None:
    """Connect this process to Ray at ``address``; no-op if connected.

    A ``host:port`` GCS address is probed first: ``ray.init`` against a dead address waits
    about 20 s. ``ray://`` and ``http://`` addresses (Ray Client, job API) are passed on.
    """
    import ray

    if ray.is_initialized():
        return
    if not address:
        raise DriverError("no Ray address: start the stack with `smoke up`, pass --address or set ray.address")
    host, _, port = address.rpartition(":")
    if "://" not in address and (not port.isdigit() or not port_open(host, int(port), timeout=2.0)):
        raise DriverError(f"Ray's GCS at {address} does not accept connections")
    ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)


def disconnect_driver() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


@contextlib.contextmanager
def driver_or_local_ray(address: str | None, namespace: str) -> Iterator[None]:
    """Connected to ``address`` for the block, or to a Ray started for it (and stopped after) when None."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        connect_driver(address, namespace)
    else:
        # address="local": a Ray of our own, never whatever cluster `ray start` left on this host.
        ray.init(address="local", namespace=namespace, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
