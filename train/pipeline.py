"""One training run, end to end: data -> features -> time split -> fit (or sweep) -> evaluate -> register.

``quick=True`` and the full sweep share every step except the fit: the quick run
fits one LightGBM on the point features in this process (seconds, no Ray
needed), the sweep runs Ray Tune trials (LightGBM on Ray Train beside sklearn
baselines, :mod:`train.sweep`). Both go through the same feature building, the
same split, the same evaluation and the same registry.

The default feature set is ``point`` (``POINT_FEATURES``): the HTTP API predicts
from one reading, so the production model must not need history. ``all`` adds
the windowed features (recorded in the metadata as ``feature_set``); such a
model suits the stream, which has each sensor's history.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from ingest.schema import LABEL, SENSOR_ID, TIMESTAMP
from ingest.settings import Settings
from train.dataset import (
    Engine,
    TimeSplit,
    build_features,
    feature_matrix,
    fingerprint,
    load_source,
    split_by_time,
    validate_frame,
)
from train.drift import FILE_NAME as DRIFT_FILE
from train.drift import DriftReference
from train.evaluate import choose_threshold, classification_metrics, evaluate
from train.features import FEATURE_NAMES, FEATURE_VERSION, POINT_FEATURES
from train.models import DEFAULT_LIGHTGBM, feature_importance, fit_in_process, model_type, predict_proba
from train.registry import ModelRegistry, PromotionRefused, RegistryError
from train.report import write_plots, write_report
from train.sweep import check_sweep_fits, default_trials, run_sweep

log = logging.getLogger(__name__)

FeatureSet = Literal["point", "all"]
Promote = Literal["auto", "never", "force"]
FEATURE_SETS: dict[str, tuple[str, ...]] = {"point": POINT_FEATURES, "all": FEATURE_NAMES}
PROMOTION_METRIC = "pr_auc"


def ray_results_dir(settings: Settings) -> Path:
    """Where Ray Train/Tune keep trial results: beside the registry (a shared path on a multi-node cluster)."""
    return Path(settings.train.registry_dir).resolve().parent / "ray_results"


def train_and_register(
    settings: Settings,
    source: str | Path,
    *,
    quick: bool = False,
    feature_set: FeatureSet = "point",
    trials: list[dict[str, Any]] | None = None,
    engine: Engine | None = None,
    promote: Promote = "auto",
) -> str:
    """Train on ``source`` (Kaggle CSV or Parquet lake), register the model, return its version.

    ``promote="auto"`` makes the new version production when there is none yet, or when
    it beats production on the same test set; ``"never"`` only registers; ``"force"``
    always promotes. The sweep (``quick=False``) needs a connected Ray driver.
    """
    cfg = settings.train
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature_set must be one of {', '.join(FEATURE_SETS)}, got {feature_set!r}")
    feature_names = list(FEATURE_SETS[feature_set])
    engine = engine or ("local" if quick else "ray")
    started = time.monotonic()
    if not quick:
        check_sweep_fits(cfg.num_workers, cfg.max_concurrent_trials)  # before reading data: fail fast

    readings = load_source(source)
    readings, rejected = validate_frame(readings)
    log.info("train: %d valid readings of %d sensors from %s (%.1f s)", len(readings),
             readings[SENSOR_ID].nunique(), source, time.monotonic() - started)
    features = build_features(readings, engine=engine)
    split = split_by_time(features, validation_fraction=cfg.validation_fraction, test_fraction=cfg.test_fraction)
    log.info("train: features (%s engine) and time split %s (%.1f s)", engine, split.summary(),
             time.monotonic() - started)

    sweep_rows: list[dict[str, Any]] = []
    sweep_seconds: float | None = None
    if quick:
        params = dict(DEFAULT_LIGHTGBM)
        model = fit_in_process(params, feature_matrix(split.train, feature_names), split.train[LABEL].to_numpy(),
                               feature_matrix(split.validation, feature_names), split.validation[LABEL].to_numpy())
    else:
        result = run_sweep(split, feature_names, trials or default_trials(), num_workers=cfg.num_workers,
                           max_concurrent_trials=cfg.max_concurrent_trials, storage_path=ray_results_dir(settings))
        params, model = result.best.config, result.model
        sweep_rows = [t.row() for t in result.trials]
        sweep_seconds = round(result.seconds, 2)
        log.info("train: sweep of %d trials took %.1f s; best %s (validation PR-AUC %.4f)", len(result.trials),
                 result.seconds, params, result.best.val_pr_auc)
    fit_seconds = time.monotonic() - started

    x_val = feature_matrix(split.validation, feature_names)
    x_test = feature_matrix(split.test, feature_names)
    threshold = choose_threshold(split.validation[LABEL].to_numpy(), predict_proba(model, x_val), cfg.target_recall)
    proba_test = predict_proba(model, x_test)
    evaluation = evaluate(y_test=split.test[LABEL].to_numpy(), proba_test=proba_test,
                          sensor_ids=split.test[SENSOR_ID].tolist(),
                          timestamps=split.test[TIMESTAMP].to_numpy(), threshold=threshold)
    test_fingerprint = fingerprint(split.test)
    registry = ModelRegistry(cfg.registry_dir, cfg.model_name)
    run = {
        "model_type": model_type(model),
        "feature_names": feature_names,
        "feature_set": feature_set,
        "feature_version": FEATURE_VERSION,
        "params": params,
        "quick": quick,
        "data": {"source": str(source), "rows": len(readings), "sensors": int(readings[SENSOR_ID].nunique()),
                 "fingerprint": fingerprint(readings), "rejected_by_reason": rejected},
        "split": split.summary(),
        "sweep": sweep_rows,
    }
    metadata = {
        **run,
        "threshold": threshold.threshold,
        "target_recall": cfg.target_recall,
        "metrics": _headline(evaluation),
        "evaluation": {k: v for k, v in evaluation.items() if k != "incidents"},
        "promotion_metric": PROMOTION_METRIC,
        "test_fingerprint": test_fingerprint,
        "compared_to": _measure_production(registry, split, test_fingerprint),
        "train_seconds": round(fit_seconds, 2),
        "sweep_seconds": sweep_seconds,
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        plots = write_plots(out, split.test[LABEL].to_numpy(), proba_test, threshold.threshold,
                            feature_importance(model, feature_names))
        report = write_report(out, title=f"{cfg.model_name}: {run['model_type']} on {Path(source).name}",
                              run=run, evaluation=evaluation, plots=plots)
        drift = DriftReference.fit(feature_matrix(split.train, feature_names), feature_names).save(out / DRIFT_FILE)
        version = registry.register(model, metadata, artifacts={"report.md": report, DRIFT_FILE: drift, **plots})
    _apply_promotion(registry, version, promote)
    m = metadata["metrics"]
    log.info("train: registered %s:%s (%s) test PR-AUC %s recall %.4f precision %.4f at threshold %.4g; "
             "production is %s (%.1f s)", cfg.model_name, version, run["model_type"], _fmt(m["pr_auc"]),
             m["recall"], m["precision"], threshold.threshold, registry.production_version(),
             time.monotonic() - started)
    return version


def _headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    test = evaluation["test"]
    ttd = evaluation["time_to_detect"]
    keys = ("precision", "recall", "f1", "accuracy", "roc_auc", "pr_auc", "threshold")
    return {**{k: test[k] for k in keys}, "median_time_to_detect_s": ttd["median_delay_s"],
            "incidents_missed": ttd["missed"], "incidents": ttd["incidents"]}


def _measure_production(registry: ModelRegistry, split: TimeSplit, test_fingerprint: str) -> dict[str, Any] | None:
    """Score the current production model on this run's test set, so promotion compares like with like."""
    current = registry.production_version()
    if current is None:
        return None
    try:
        production = registry.load(current)
    except RegistryError as err:
        log.warning("train: cannot measure production %s on the new test set: %s", current, err)
        return None
    proba = production.predict_proba(feature_matrix(split.test, production.feature_names))
    metrics = classification_metrics(split.test[LABEL].to_numpy(), proba, production.threshold)
    return {"version": current, "test_fingerprint": test_fingerprint,
            "metrics": {k: metrics[k] for k in ("precision", "recall", "f1", "roc_auc", "pr_auc")}}


def _apply_promotion(registry: ModelRegistry, version: str, promote: Promote) -> None:
    if promote == "never":
        return
    try:
        registry.promote(version, force=promote == "force")
    except PromotionRefused as err:
        log.info("train: %s stays a candidate: %s", version, err)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


__all__ = ["FEATURE_SETS", "train_and_register"]
