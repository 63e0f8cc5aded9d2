"""Fast unit tests of the pure parts of training: threshold choice, time-to-detect, time split, drift, leaks."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import train.drift
import train.evaluate
from ingest.schema import LABEL, SENSOR_ID, TIMESTAMP
from train.dataset import TrainingDataError, feature_matrix, split_by_time
from train.drift import DriftReference
from train.evaluate import choose_threshold, classification_metrics, time_to_detect
from train.features import POINT_FEATURES, LeakyFeatureError, check_feature_names
from train.models import build_sklearn, fit_in_process, predict_proba


@pytest.mark.parametrize("module", [train.evaluate, train.drift])
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_threshold_reaches_target_recall_at_least_cost() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    proba = np.clip(0.35 * y + rng.uniform(0, 0.65, 2000), 0, 1)
    choice = choose_threshold(y, proba, 0.99)
    pred = proba >= choice.threshold
    assert pred[y == 1].mean() >= 0.99
    # Any higher threshold among the scores loses the target: the chosen one costs the least precision.
    higher = np.unique(proba[proba > choice.threshold])[0]
    assert (proba >= higher)[y == 1].mean() < 0.99
    with pytest.raises(ValueError, match="no positive label"):
        choose_threshold(np.zeros(5), np.linspace(0, 1, 5), 0.9)


def test_metrics_refuse_bad_input_and_report_undefined_auc() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        classification_metrics(np.array([0, 2]), np.array([0.1, 0.2]), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics(np.array([0, 1]), np.array([np.nan, 0.2]), 0.5)
    one_class = classification_metrics(np.ones(4), np.full(4, 0.9), 0.5)
    assert one_class["roc_auc"] is None and one_class["recall"] == 1.0
    cm = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.7, 0.8, 0.2]), 0.5)["confusion_matrix"]
    assert cm == {"tn": 1, "fp": 1, "fn": 1, "tp": 1}


def test_time_to_detect_per_sensor_onsets_and_misses() -> None:
    # Interleaved sensors, rows out of time order: replay must sort per sensor by time.
    sensors = ["a", "b", "a", "b", "a", "b", "a", "b"]
    t = np.array([3.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0])
    y = np.array([1, 0, 0, 1, 1, 1, 0, 0])  # a: 0@0,1@1,0@2,1@3 ; b: 0@0,1@1,1@2,0@3
    pred = np.array([0, 0, 0, 0, 1, 1, 0, 0])
    incidents = {(i.sensor_id, i.onset): i.delay_s for i in time_to_detect(sensors, t, y, pred)}
    assert incidents == {("a", 1.0): 0.0, ("a", 3.0): None, ("b", 1.0): 1.0}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=20, max_size=200))
def test_no_test_timestamp_precedes_a_training_one(stamps: list[int]) -> None:
    frame = pd.DataFrame({SENSOR_ID: [f"s{i % 3}" for i in range(len(stamps))],
                          TIMESTAMP: np.array(stamps, dtype=float) + 1.7e9, LABEL: [i % 2 for i in range(len(stamps))]})
    try:
        split = split_by_time(frame, validation_fraction=0.1, test_fraction=0.2)
    except TrainingDataError:
        # Refused only when the cut instants collapse (too few distinct timestamps), never mis-split.
        order = np.sort(frame[TIMESTAMP].to_numpy())
        assert not order[0] < order[int(len(order) * 0.7)] < order[int(len(order) * 0.8)]
        return
    assert len(split.train) + len(split.validation) + len(split.test) == len(frame)
    later = pd.concat([split.validation, split.test])
    assert split.train[TIMESTAMP].max() < later[TIMESTAMP].min()
    if len(split.validation):
        assert split.validation[TIMESTAMP].max() < split.test[TIMESTAMP].min()


def test_leaky_columns_are_refused() -> None:
    for name in ("UTC", "CNT", "cnt", "utc"):
        with pytest.raises(LeakyFeatureError, match="leak the label"):
            check_feature_names(["temperature_c", name])
    frame = pd.DataFrame({"CNT": [1.0], "temperature_c": [20.0]})
    with pytest.raises(LeakyFeatureError):
        feature_matrix(frame, ["temperature_c", "CNT"])


def test_drift_reference_roundtrip_and_missing_values(tmp_path) -> None:
    rng = np.random.default_rng(2)
    x = rng.lognormal(size=(3000, 2))
    x[:300, 1] = np.nan
    names = ["tvoc_ppb", "h2_ethanol_ratio"]
    ref = DriftReference.fit(x, names)
    loaded = DriftReference.load(ref.save(tmp_path / "d.json"))
    same = loaded.psi(x)
    assert max(same.values()) < 0.01
    recent = rng.lognormal(size=(1000, 2))
    recent[:, 1] = np.nan  # the ratio stopped being defined: drift, not silence
    psi = loaded.psi(recent)
    assert psi["h2_ethanol_ratio"] > 1.0 and psi["tvoc_ppb"] < 0.1
    with pytest.raises(ValueError, match="feature order"):
        loaded.psi(recent[:, :1])


def test_models_accept_nan_without_zero_filling() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, len(POINT_FEATURES)))
    y = (x[:, 0] > 0).astype(int)
    x[rng.random(x.shape) < 0.1] = np.nan
    for config in ({"model": "lightgbm", "num_boost_round": 20}, {"model": "random_forest", "n_estimators": 10},
                   {"model": "logistic_regression"}):
        model = fit_in_process(config, x[:300], y[:300], x[300:], y[300:])
        proba = predict_proba(model, x[300:])
        assert np.isfinite(proba).all() and ((proba >= 0) & (proba <= 1)).all()
    # The linear baseline imputes inside its pipeline (median + missing indicators).
    assert build_sklearn({"model": "logistic_regression"}).steps[0][0] == "impute"
    with pytest.raises(ValueError, match="must be one of"):
        fit_in_process({"model": "svm"}, x, y, x, y)
