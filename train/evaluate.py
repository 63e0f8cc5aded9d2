"""Honest evaluation of a fire-probability model on a held-out, later part of the timeline.

The decision threshold is chosen on the validation split (the part of the timeline
between train and test) to reach a target recall, then applied unchanged to the
test split, so the recall reported on test is what a deployment would see, and
may fall short of the target; the report says so rather than re-tuning on test.

Time-to-detect replays the test timeline per sensor: an incident starts at a 0->1
transition of the label and lasts while the label stays 1; its detection delay is
the time from the onset to the first reading in the incident predicted positive.
A sensor whose test timeline starts inside an incident has no observed onset, so
that incident is not counted.

>>> y = np.array([0, 0, 1, 1, 1, 0, 1, 1])
>>> t = np.arange(8.0)
>>> incidents = time_to_detect(["s"] * 8, t, y, np.array([0, 0, 0, 1, 1, 0, 1, 0]))
>>> [(i.onset, i.delay_s) for i in incidents]
[(2.0, 1.0), (6.0, 0.0)]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm


@dataclass(frozen=True)
class ThresholdChoice:
    """The highest threshold whose recall on the data it was chosen on reaches the target."""

    threshold: float
    target_recall: float
    recall: float
    precision: float


@dataclass(frozen=True)
class Incident:
    sensor_id: str
    onset: float  # timestamp of the 0->1 label transition
    end: float  # timestamp of the last labelled-positive reading of the incident
    delay_s: float | None  # None: never predicted positive during the incident (missed)


def choose_threshold(y_true: np.ndarray, proba: np.ndarray, target_recall: float) -> ThresholdChoice:
    """Highest threshold with recall >= ``target_recall`` (so the least precision is given up)."""
    y_true = _labels(y_true)
    if y_true.sum() == 0:
        raise ValueError("cannot choose a threshold for a target recall: the data has no positive label")
    precision, recall, thresholds = skm.precision_recall_curve(y_true, proba)
    # precision/recall have one more entry than thresholds (the final point recall=0).
    ok = np.flatnonzero(recall[:-1] >= target_recall)
    best = ok[-1]  # thresholds increase along the curve; the last one still reaching the target
    return ThresholdChoice(float(thresholds[best]), target_recall, float(recall[best]), float(precision[best]))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1, accuracy at ``threshold``; ROC-AUC and PR-AUC; the confusion matrix."""
    y_true = _labels(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    if len(y_true) != len(proba):
        raise ValueError(f"{len(y_true)} labels but {len(proba)} predictions")
    if not np.isfinite(proba).all():
        raise ValueError("predicted probabilities contain NaN or infinity")
    pred = (proba >= threshold).astype(int)
    both = len(np.unique(y_true)) == 2
    tn, fp, fn, tp = skm.confusion_matrix(y_true, pred, labels=[0, 1]).ravel()
    return {
        "threshold": float(threshold),
        "rows": len(y_true),
        "positives": int(y_true.sum()),
        "precision": float(skm.precision_score(y_true, pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, pred, zero_division=0)),
        "f1": float(skm.f1_score(y_true, pred, zero_division=0)),
        "accuracy": float(skm.accuracy_score(y_true, pred)),
        # Undefined with one class only: reported as None, not as a made-up number.
        "roc_auc": float(skm.roc_auc_score(y_true, proba)) if both else None,
        "pr_auc": float(skm.average_precision_score(y_true, proba)) if both else None,
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }


def time_to_detect(
    sensor_ids: Sequence[str], timestamps: np.ndarray, y_true: np.ndarray, predicted: np.ndarray,
) -> list[Incident]:
    """Replay each sensor's timeline in time order; one :class:`Incident` per observed label onset."""
    sensors = np.asarray(sensor_ids, dtype=object)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    y_true = _labels(y_true)
    predicted = np.asarray(predicted).astype(bool)
    order = np.lexsort((timestamps, sensors))
    incidents: list[Incident] = []
    s, t, y, p = sensors[order], timestamps[order], y_true[order], predicted[order]
    bounds = np.flatnonzero(np.r_[True, s[1:] != s[:-1], True])
    for a, b in itertools.pairwise(bounds):
        ys = y[a:b]
        onsets = np.flatnonzero((ys[1:] == 1) & (ys[:-1] == 0)) + 1
        for onset in onsets:
            stop = onset + np.argmax(ys[onset:] == 0) if (ys[onset:] == 0).any() else len(ys)
            hits = np.flatnonzero(p[a + onset: a + stop])
            delay = float(t[a + onset + hits[0]] - t[a + onset]) if len(hits) else None
            incidents.append(Incident(str(s[a]), float(t[a + onset]), float(t[a + stop - 1]), delay))
    return incidents


def summarize_incidents(incidents: list[Incident]) -> dict[str, Any]:
    delays = np.array([i.delay_s for i in incidents if i.delay_s is not None])
    return {
        "incidents": len(incidents),
        "detected": len(delays),
        "missed": int(len(incidents) - len(delays)),
        "median_delay_s": float(np.median(delays)) if len(delays) else None,
        "p90_delay_s": float(np.quantile(delays, 0.9)) if len(delays) else None,
        "max_delay_s": float(delays.max()) if len(delays) else None,
    }


def evaluate(
    *,
    y_test: np.ndarray,
    proba_test: np.ndarray,
    sensor_ids: Sequence[str],
    timestamps: np.ndarray,
    threshold: ThresholdChoice,
) -> dict[str, Any]:
    """Everything the report shows, at the threshold chosen on validation and at 0.5."""
    at_threshold = classification_metrics(y_test, proba_test, threshold.threshold)
    incidents = time_to_detect(sensor_ids, timestamps, y_test, proba_test >= threshold.threshold)
    return {
        "test": at_threshold,
        "test_at_0_5": classification_metrics(y_test, proba_test, 0.5),
        "threshold_choice": asdict(threshold),
        "time_to_detect": summarize_incidents(incidents),
        "incidents": [asdict(i) for i in incidents],
    }


def _labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, got values {np.unique(y)[:5].tolist()}")
    return y.astype(int)
