"""One feature definition for both paths: Ray Data batch features equal the stream's chunked features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ingest.kaggle import read_kaggle_csv
from ingest.kaggle_generator import write_kaggle_csv
from ingest.schema import LABEL, MEASUREMENTS, SENSOR_ID, TIMESTAMP
from train.dataset import build_features, split_by_time, validate_frame
from train.features import FEATURE_NAMES, FeatureState, compute_features


@pytest.fixture(scope="module")
def readings(tmp_path_factory) -> pd.DataFrame:
    """Three sensors' generated Kaggle-format recordings, interleaved in time order."""
    tmp = tmp_path_factory.mktemp("kaggle")
    frames = []
    for seed, sensor in enumerate(("kitchen-1", "hall-2", "lab-3")):
        path = write_kaggle_csv(tmp / f"{sensor}.csv", rows=700, seed=seed, sessions=2).path
        frames.append(read_kaggle_csv(path, sensor_id=sensor))
    raw = pd.concat(frames, ignore_index=True)
    valid, rejected = validate_frame(raw)
    assert rejected == {}
    valid = valid.drop_duplicates([SENSOR_ID, TIMESTAMP])  # a (sensor, instant) pair names one reading
    return valid.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)


def _stream_features(readings: pd.DataFrame, seed: int) -> pd.DataFrame:
    """What the stream computes: random-sized polled batches through one long-lived FeatureState."""
    rng = np.random.default_rng(seed)
    state = FeatureState(capacity=2)  # small on purpose: growing must not disturb the numbers
    sensors = readings[SENSOR_ID].tolist()
    stamps = readings[TIMESTAMP].to_numpy()
    values = readings[list(MEASUREMENTS)].to_numpy()
    parts, start = [], 0
    while start < len(readings):
        stop = min(len(readings), start + int(rng.integers(1, 60)))
        parts.append(compute_features(state, sensors[start:stop], stamps[start:stop], values[start:stop]))
        start = stop
    out = pd.DataFrame(np.vstack(parts), columns=list(FEATURE_NAMES))
    out.insert(0, TIMESTAMP, stamps)
    out.insert(0, SENSOR_ID, sensors)
    return out


@pytest.mark.integration
def test_batch_features_on_ray_data_equal_stream_features(ray_cluster, readings) -> None:
    assert readings[SENSOR_ID].nunique() == 3
    # Interleaved: consecutive readings come from different sensors.
    assert (readings[SENSOR_ID].to_numpy()[1:] != readings[SENSOR_ID].to_numpy()[:-1]).mean() > 0.1
    batch = build_features(readings, engine="ray", num_partitions=2)
    stream = _stream_features(readings, seed=5)
    key = [TIMESTAMP, SENSOR_ID]
    batch = batch.sort_values(key, kind="stable").reset_index(drop=True)
    stream = stream.sort_values(key, kind="stable").reset_index(drop=True)
    assert len(batch) == len(stream) == len(readings)
    assert (batch[SENSOR_ID].to_numpy() == stream[SENSOR_ID].to_numpy()).all()
    np.testing.assert_array_equal(batch[TIMESTAMP].to_numpy(), stream[TIMESTAMP].to_numpy())
    b = batch[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    s = stream[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(b, s, rtol=1e-9, atol=1e-9, equal_nan=True)
    # Windowed features are real numbers after the warm-up, not NaN everywhere (the test could not fail).
    assert np.isfinite(b[:, FEATURE_NAMES.index("tvoc_ppb_mean_w")]).mean() > 0.9
    # The label travels with its reading through the shuffle.
    merged = batch.merge(readings[[SENSOR_ID, TIMESTAMP, LABEL]], on=key, suffixes=("", "_orig"))
    assert (merged[LABEL] == merged[f"{LABEL}_orig"]).all()
    # The in-process engine runs the same per-sensor function: same numbers.
    local = build_features(readings, engine="local").sort_values(key, kind="stable").reset_index(drop=True)
    np.testing.assert_allclose(local[list(FEATURE_NAMES)].to_numpy(), b, rtol=0, atol=0, equal_nan=True)


def test_time_split_of_generated_data_trains_on_the_past(readings) -> None:
    features = build_features(readings, engine="local")
    split = split_by_time(features, validation_fraction=0.1, test_fraction=0.2)
    assert split.train[TIMESTAMP].max() < split.validation[TIMESTAMP].min()
    assert split.validation[TIMESTAMP].max() < split.test[TIMESTAMP].min()
    assert len(split.test) >= 0.15 * len(features)


def test_one_reading_per_sensor_polls_give_exactly_the_numbers_of_whole_sequences() -> None:
    """The stream's usual poll (each sensor once) takes the sliced layout; a sensor's whole history
    in one call (the batch path) takes the general one: both must give identical numbers."""
    rng = np.random.default_rng(3)
    sensors = [f"s{i}" for i in range(6)]
    steps = 25  # longer than the window: covers partial windows (masked) and full ones
    stamps = 1_780_000_000.0 + np.arange(steps, dtype=np.float64)
    values = rng.lognormal(3.0, 1.0, size=(steps, len(sensors), len(MEASUREMENTS)))
    state = FeatureState(capacity=2)
    polled = np.stack([compute_features(state, sensors, np.full(len(sensors), stamps[t]), values[t])
                       for t in range(steps)], axis=1)  # (sensor, step, feature)
    for j, sensor in enumerate(sensors):
        whole = compute_features(FeatureState(), [sensor] * steps, stamps, values[:, j])
        np.testing.assert_array_equal(polled[j], whole, err_msg=sensor)
