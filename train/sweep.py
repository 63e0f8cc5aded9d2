"""Ray Tune sweep: LightGBM configs (each a distributed Ray Train run) beside sklearn baseline trials.

In Train V2 a Tuner cannot wrap a trainer, so every trial is a function
trainable: a LightGBM trial starts its own ``LightGBMTrainer``
(:mod:`train.distributed`), a baseline trial fits its sklearn pipeline in the
trial process. Every trial scores its model the same way (PR-AUC on the
validation split) and reports once, with the model as checkpoint. Early
stopping happens inside each LightGBM trial: boosting stops after
``early_stopping_rounds`` rounds without a better validation PR-AUC.

Resources (why the sweep never deadlocks on a 2-CPU machine):

- a LightGBM trial's own process reserves 0 CPU: it only waits for its trainer,
  whose ``num_workers`` workers reserve 1 CPU each (LightGBM runs 1 thread each);
- a baseline trial reserves 1 CPU and fits with 1 thread;
- at most ``max_concurrent_trials`` trials run at once, and before starting we
  check that ``max_concurrent_trials * max(num_workers, 1)`` CPUs exist, so a
  trainer can always place its workers (one that cannot hangs forever).

With the defaults (2 workers, 1 concurrent trial) the sweep needs exactly 2 CPUs.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.metrics import average_precision_score

from ingest.schema import LABEL
from train.dataset import TimeSplit, feature_matrix
from train.distributed import ResourcesError, check_fits, train_lightgbm_distributed
from train.models import LIGHTGBM, check_config, fit_in_process, load_model, predict_proba, save_model

log = logging.getLogger(__name__)
METRIC = "val_pr_auc"
TRIAL_DRIVER_MEMORY = 256 * 1024 * 1024


def default_trials(*, rounds: int = 200) -> list[dict[str, Any]]:
    """The sweep's grid: 6 LightGBM configs and 3 baselines (2 random forests, 1 logistic regression)."""
    lightgbm = [
        {"model": LIGHTGBM, "num_leaves": leaves, "learning_rate": rate, "min_data_in_leaf": 20,
         "feature_fraction": 0.9, "num_boost_round": rounds, "early_stopping_rounds": 20}
        for leaves in (15, 31, 63) for rate in (0.05, 0.1)
    ]
    baselines = [
        {"model": "random_forest", "n_estimators": 100, "max_depth": 12, "min_samples_leaf": 5},
        {"model": "random_forest", "n_estimators": 100, "max_depth": None, "min_samples_leaf": 1},
        {"model": "logistic_regression", "C": 1.0},
    ]
    return lightgbm + baselines


@dataclass(frozen=True)
class TrialOutcome:
    trial: int
    config: dict[str, Any]
    val_pr_auc: float | None
    seconds: float | None
    error: str | None
    checkpoint_path: str | None

    def row(self) -> dict[str, Any]:
        return {"trial": self.trial, "model": self.config["model"], "config": self.config,
                "val_pr_auc": self.val_pr_auc, "time_s": self.seconds, "error": self.error}


@dataclass(frozen=True)
class SweepResult:
    best: TrialOutcome
    model: Any
    trials: list[TrialOutcome]
    seconds: float


def _run_trial(config: dict[str, Any], *, train: pd.DataFrame, validation: pd.DataFrame,
               feature_names: list[str], num_workers: int, storage_path: str) -> None:
    """One Tune trial: fit its config, score it on validation, report once with the model."""
    from ray import tune

    trial = config["trial"]
    started = time.monotonic()
    x_val = feature_matrix(validation, feature_names)
    y_val = validation[LABEL].to_numpy()
    if trial["model"] == LIGHTGBM:
        model = train_lightgbm_distributed(train, validation, feature_names, trial, num_workers=num_workers,
                                           storage_path=storage_path).booster
    else:
        model = fit_in_process(trial, feature_matrix(train, feature_names), train[LABEL].to_numpy(), x_val, y_val)
    score = float(average_precision_score(y_val, predict_proba(model, x_val)))
    with tempfile.TemporaryDirectory() as tmp:
        _, file_name = save_model(model, Path(tmp))
        tune.report({METRIC: score, "time_s": time.monotonic() - started, "model_file": file_name},
                    checkpoint=tune.Checkpoint.from_directory(tmp))


def _trial_resources(config: dict[str, Any]):
    from ray.tune import PlacementGroupFactory

    if config["trial"]["model"] == LIGHTGBM:
        # No CPU: the trial process only waits for its trainer. A placement group bundle cannot be
        # empty, so it reserves a little memory instead (memory is a logical resource too).
        return PlacementGroupFactory([{"CPU": 0, "memory": TRIAL_DRIVER_MEMORY}])
    return PlacementGroupFactory([{"CPU": 1}])


def _progress_callback(total: int):
    from ray.tune import Callback

    class Progress(Callback):
        """One log line per finished trial: the sweep's progress without Tune's verbose tables."""

        def __init__(self) -> None:
            self.done = 0

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            result = trial.last_result or {}
            log.info("sweep: trial %d/%d done: %s val PR-AUC %.4f in %.1f s", self.done, total,
                     trial.config["trial"]["model"], result.get(METRIC, float("nan")), result.get("time_s", 0.0))

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self.done += 1
            log.error("sweep: trial %d/%d failed: %s (%s)", self.done, total, trial.config["trial"],
                      trial.error_file)

    return Progress()


def check_sweep_fits(num_workers: int, max_concurrent_trials: int) -> None:
    """Refuse a sweep whose concurrent trainers cannot all place their workers (they would hang)."""
    check_fits(max_concurrent_trials * max(num_workers, 1),
               f"{max_concurrent_trials} concurrent trials with {num_workers} Train workers each")


def run_sweep(
    split: TimeSplit,
    feature_names: list[str],
    trials: list[dict[str, Any]],
    *,
    num_workers: int,
    max_concurrent_trials: int,
    storage_path: str | Path,
) -> SweepResult:
    """Run every trial config through Ray Tune; return the best by validation PR-AUC and its model."""
    from ray import tune

    for trial in trials:
        check_config(trial)
    if not trials:
        raise ValueError("a sweep needs at least one trial config")
    check_sweep_fits(num_workers, max_concurrent_trials)
    storage_path = str(Path(storage_path).resolve())
    started = time.monotonic()
    trainable = tune.with_resources(
        tune.with_parameters(_run_trial, train=split.train, validation=split.validation,
                             feature_names=list(feature_names), num_workers=num_workers,
                             storage_path=storage_path),
        _trial_resources,
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(trials)},
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", max_concurrent_trials=max_concurrent_trials),
        run_config=tune.RunConfig(name=f"sweep-{uuid.uuid4().hex[:8]}", storage_path=storage_path,
                                  callbacks=[_progress_callback(len(trials))], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    grid = tuner.fit()
    outcomes = []
    for i, result in enumerate(grid):
        metrics = result.metrics or {}
        outcomes.append(TrialOutcome(
            trial=i, config=result.config["trial"], val_pr_auc=metrics.get(METRIC),
            seconds=metrics.get("time_s"), error=None if result.error is None else str(result.error).splitlines()[0],
            checkpoint_path=result.checkpoint.path if result.checkpoint else None))
    scored = [o for o in outcomes if o.val_pr_auc is not None and o.checkpoint_path]
    if not scored:
        raise RuntimeError(f"every sweep trial failed; first error: {outcomes[0].error}")
    best = max(scored, key=lambda o: (o.val_pr_auc, -o.trial))
    best_result = grid[best.trial]
    with best_result.checkpoint.as_directory() as directory:
        model = load_model(Path(directory) / best_result.metrics["model_file"])
    return SweepResult(best, model, outcomes, time.monotonic() - started)


__all__ = ["METRIC", "ResourcesError", "SweepResult", "TrialOutcome", "check_sweep_fits", "default_trials",
           "run_sweep"]
