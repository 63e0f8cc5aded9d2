"""Data-parallel LightGBM on Ray Train (V2 API: a training loop per worker).

Each worker gets a shard of the training rows and the whole validation split (so
every worker computes the same early-stopping metric and all stop at the same
round), joins LightGBM's network through ``get_network_params``, trains, and
reports metrics and the model checkpoint ONCE at the end. The stock
``RayTrainReportCallback`` reports every boosting round, which measured 7x
slower here (docs/architecture.md).

Resources: every worker holds ``cpus_per_worker`` CPUs and LightGBM runs that
many threads. The Train controller takes no CPU. A trainer whose workers do not
fit the free CPUs hangs (``WorkerGroupStartupTimeoutError``, retried forever),
so :func:`check_fits` refuses such a request up front.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from ingest.schema import LABEL
from train.models import LIGHTGBM_FILE, boosting_rounds, lightgbm_params, load_model, save_model

log = logging.getLogger(__name__)


class ResourcesError(RuntimeError):
    """A training request that cannot fit the cluster's CPUs (it would hang, not fail)."""


@dataclass(frozen=True)
class DistributedResult:
    booster: lgb.Booster
    best_iteration: int
    validation_pr_auc: float
    seconds: float


def check_fits(cpus_needed: float, what: str) -> None:
    """Refuse work that needs more CPUs than the cluster has, or than are free right now.

    A trainer that cannot place its workers waits forever rather than failing, so
    CPUs held by other work (stream actors, Serve replicas) count against it too.
    """
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    free = ray.available_resources().get("CPU", 0.0)
    if cpus_needed > total:
        raise ResourcesError(f"{what} needs {cpus_needed:g} CPUs but the Ray cluster has {total:g}: "
                             "lower train.num_workers or train.max_concurrent_trials")
    if cpus_needed > free:
        raise ResourcesError(f"{what} needs {cpus_needed:g} CPUs but only {free:g} of {total:g} are free "
                             "(other work holds the rest): wait, add a node, or lower train.num_workers")


def _train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    from ray.train.lightgbm import get_network_params

    features: list[str] = config["feature_names"]
    train_frame = ray.train.get_dataset_shard("train").materialize().to_pandas()
    val_frame = ray.train.get_dataset_shard("validation").materialize().to_pandas()
    x_train, y_train = _matrix(train_frame, features)
    x_val, y_val = _matrix(val_frame, features)
    trial = config["trial"]
    rounds, patience = boosting_rounds(trial)
    params = {
        **lightgbm_params(trial, num_threads=config["cpus_per_worker"]),
        "tree_learner": "data_parallel",
        "pre_partition": True,  # Ray Data already sharded the rows
        **get_network_params(),
    }
    train_set = lgb.Dataset(x_train, y_train)
    booster = lgb.train(params, train_set, rounds,
                        valid_sets=[lgb.Dataset(x_val, y_val, reference=train_set)], valid_names=["validation"],
                        callbacks=[lgb.early_stopping(patience, verbose=False)])
    metrics = {"best_iteration": int(booster.best_iteration or booster.current_iteration()),
               "validation_pr_auc": float(booster.best_score["validation"]["average_precision"])}
    # Every worker must report (it is a barrier); only rank 0 carries the model.
    if ray.train.get_context().get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as tmp:
            save_model(booster, Path(tmp))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics, checkpoint=None)


def _matrix(frame: pd.DataFrame, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    # to_numpy(float64, na_value=nan) normalises Arrow-backed dtypes (double[pyarrow]) for LightGBM.
    return (frame[features].to_numpy(dtype=np.float64, na_value=np.nan),
            frame[LABEL].to_numpy(dtype=np.int64))


def train_lightgbm_distributed(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    feature_names: list[str],
    trial: dict[str, Any],
    *,
    num_workers: int,
    storage_path: str | Path,
    cpus_per_worker: int = 1,
) -> DistributedResult:
    """Fit one LightGBM config with ``num_workers`` Ray Train workers; returns the booster."""
    import ray.data
    import ray.train
    from ray.train.lightgbm import LightGBMTrainer

    check_fits(num_workers * cpus_per_worker, f"LightGBM with {num_workers} workers x {cpus_per_worker} CPU")
    columns = [*feature_names, LABEL]
    started = time.monotonic()
    trainer = LightGBMTrainer(
        _train_loop_per_worker,
        train_loop_config={"feature_names": list(feature_names), "trial": trial, "cpus_per_worker": cpus_per_worker},
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers,
                                               resources_per_worker={"CPU": cpus_per_worker}),
        run_config=ray.train.RunConfig(name=f"lightgbm-{uuid.uuid4().hex[:8]}", storage_path=str(storage_path),
                                       failure_config=ray.train.FailureConfig(max_failures=0)),
        datasets={"train": ray.data.from_pandas(train[columns]),
                  "validation": ray.data.from_pandas(validation[columns])},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train finished without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as directory:
        booster = load_model(Path(directory) / LIGHTGBM_FILE)
    return DistributedResult(booster, int(result.metrics["best_iteration"]),
                             float(result.metrics["validation_pr_auc"]), time.monotonic() - started)
