"""Guarded retraining: a new model replaces production only when it is no worse on a later window.

:func:`guarded_retrain` trains a candidate on ``train_source`` (registered, not
promoted), then measures the candidate and the production model on
``guard_source``, recordings later than anything the candidate trained on:

- as a classifier: PR-AUC over every reading of the window (point features);
- through the detection engine (:func:`actors.recording_evaluation.evaluate_recording`,
  the window's sessions replayed at recorded pace): missed alarms, median time to
  detect, fire alerts on label-0 readings per 100 sensor-hours.

It is promoted only when it is no worse than production on every one (within the
tolerances of :class:`ingest.settings.RetrainSettings`); otherwise it stays a
candidate. Either way the decision, both sets of figures and the reasons go to the
registry (:meth:`train.registry.ModelRegistry.record_decision`; ``smoke models
history`` lists them). Without a production model the candidate is promoted.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from actors.recording_evaluation import evaluate_recording
from ingest.schema import LABEL
from ingest.settings import Settings
from train.dataset import build_features, feature_matrix, load_source, validate_frame
from train.evaluate import classification_metrics
from train.pipeline import train_and_register
from train.registry import LoadedModel, ModelRegistry

log = logging.getLogger(__name__)


def guard_scores(settings: Settings, model: LoadedModel, guard_source: str | Path) -> dict[str, Any]:
    """The figures a candidate is judged by, for ``model`` on the guard window."""
    readings, _ = validate_frame(load_source(guard_source))
    features = build_features(readings, engine="local")
    proba = model.predict_proba(feature_matrix(features, list(model.feature_names)))
    classifier = classification_metrics(features[LABEL].to_numpy(), proba, model.threshold)
    overall = evaluate_recording(settings, guard_source, model)[0].overall()
    quiet_h = overall["quiet_sensor_hours"]
    return {
        "pr_auc": classifier["pr_auc"],
        "missed": overall["missed"],
        "ignitions": overall["ignitions"],
        "median_delay_s": overall["median_delay_s"],
        "false_alerts_per_100h": 100.0 * overall["false_alerts"] / quiet_h if quiet_h > 0 else None,
    }


def worse_on(settings: Settings, candidate: dict[str, Any], production: dict[str, Any]) -> list[str]:
    """Why the candidate is worse than production (empty: no worse on any figure)."""
    tol = settings.retrain
    reasons = []

    def num(value: float | None, missing: float) -> float:
        return missing if value is None else float(value)

    if num(candidate["pr_auc"], -np.inf) < num(production["pr_auc"], -np.inf) - tol.pr_auc_tolerance:
        reasons.append(f"PR-AUC {candidate['pr_auc']:.4f} < production {production['pr_auc']:.4f}")
    if candidate["missed"] > production["missed"]:
        reasons.append(f"missed {candidate['missed']} alarms, production {production['missed']}")
    if num(candidate["median_delay_s"], np.inf) > num(production["median_delay_s"], np.inf) + tol.delay_tolerance_s:
        reasons.append(f"median time to detect {candidate['median_delay_s']} s, production "
                       f"{production['median_delay_s']} s")
    if num(candidate["false_alerts_per_100h"], 0.0) > num(production["false_alerts_per_100h"], 0.0) \
            + tol.false_alerts_tolerance_per_100h:
        reasons.append(f"{candidate['false_alerts_per_100h']:.1f} false alerts per 100 sensor-hours, production "
                       f"{production['false_alerts_per_100h']:.1f}")
    return reasons


def guarded_retrain(settings: Settings, train_source: str | Path, guard_source: str | Path, *,
                    quick: bool = True) -> dict[str, Any]:
    """Train a candidate, judge it on the guard window, promote it only when no worse; returns the decision."""
    started = time.monotonic()
    registry = ModelRegistry(settings.train.registry_dir, settings.train.model_name)
    current = registry.production_version()
    version = train_and_register(settings, train_source, quick=quick, promote="never")
    candidate = guard_scores(settings, registry.load(version), guard_source)
    production = guard_scores(settings, registry.load(current), guard_source) if current else None
    reasons = worse_on(settings, candidate, production) if production else []
    promoted = not reasons
    if promoted:
        # The guard is this comparison on a later window; the registry's own same-test-set rule cannot apply.
        registry.promote(version, force=True)
    decision = {
        "at": time.time(), "candidate": version, "production": current, "promoted": promoted,
        "reasons": reasons or (["no production model"] if current is None else []),
        "train_source": str(train_source), "guard_source": str(guard_source),
        "candidate_scores": candidate, "production_scores": production,
        "seconds": round(time.monotonic() - started, 2),
    }
    registry.record_decision(decision)
    log.info("retrain: %s %s (production was %s)%s", version, "promoted" if promoted else "refused", current,
             "" if promoted else ": " + "; ".join(reasons))
    return decision


__all__ = ["guard_scores", "guarded_retrain", "worse_on"]
