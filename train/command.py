"""The training command, shared by ``smoke train`` and ``python -m train`` (for ``ray job submit``).

Ray: ``--address``, else ``RAY_ADDRESS`` (set by the job runtime under ``ray job
submit``), else ``ray.address`` from the settings; with none of them a local Ray
is started for the run and stopped after it. ``--quick`` needs no Ray at all.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from ingest.settings import Settings
from train.dataset import TrainingDataError
from train.distributed import ResourcesError
from train.pipeline import FEATURE_SETS, train_and_register
from train.registry import RegistryError

log = logging.getLogger("train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default=None,
                        help="Kaggle-format CSV file or Parquet lake directory (default: stream.lake_dir)")
    parser.add_argument("--quick", action="store_true",
                        help="one LightGBM on point features in this process, no sweep (seconds)")
    parser.add_argument("--features", choices=sorted(FEATURE_SETS), default="point",
                        help="point: one reading suffices (what the HTTP API needs); all: adds windowed features")
    promote = parser.add_mutually_exclusive_group()
    promote.add_argument("--no-promote", dest="promote", action="store_const", const="never", default="auto",
                         help="only register; default promotes when there is no production model or the new "
                              "one beats it on the same test set")
    promote.add_argument("--force-promote", dest="promote", action="store_const", const="force",
                         help="make the new version production whatever its metrics")
    parser.add_argument("--address", default=None, help="Ray address (default RAY_ADDRESS, then ray.address)")


@contextlib.contextmanager
def ray_connection(address: str | None, namespace: str) -> Iterator[None]:
    """Connect to the given cluster, or start a local Ray for this run; disconnect (and stop it) after."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address, namespace=namespace, log_to_driver=False)
    else:
        ray.init(namespace=namespace, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Train, register, maybe promote; one clear log line on failure."""
    source = Path(args.source or settings.stream.lake_dir)
    try:
        if args.quick:
            version = train_and_register(settings, source, quick=True, feature_set=args.features,
                                         promote=args.promote)
        else:
            address = args.address or os.environ.get("RAY_ADDRESS") or settings.ray.address
            with ray_connection(address, settings.ray.namespace):
                version = train_and_register(settings, source, quick=False, feature_set=args.features,
                                             promote=args.promote)
    except (TrainingDataError, ResourcesError, RegistryError, FileNotFoundError, ValueError) as err:
        log.error("train failed: %s", err)
        return 1
    print(version)
    return 0
