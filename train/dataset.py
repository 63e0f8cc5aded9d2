"""Training data: read a source, validate it, compute features per sensor with Ray Data, split by time.

The batch path of the shared feature definition: readings are grouped by sensor,
ordered by time, and :func:`features_of_sensor` calls
:func:`train.features.compute_features` once per sensor with a fresh
:class:`~train.features.FeatureState`, exactly as the stream does over its
long-lived state (the parity test checks they agree).

Two engines run that same per-sensor function: ``ray`` (Ray Data
``groupby("sensor_id", num_partitions=...)`` + ``map_groups``; for data that
outgrows one process) and ``local`` (pandas ``groupby``; about 10x faster
on the 62k-row Kaggle data, where Ray Data's shuffle dominates).

The split is by time, never by random rows: the earliest part of the timeline
trains, the next validates (threshold and model selection), the latest tests.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ingest.schema import LABEL, MEASUREMENTS, SENSOR_ID, TIMESTAMP
from ingest.validation import validate_records
from train.features import FEATURE_NAMES, FeatureState, check_feature_names, compute_features

log = logging.getLogger(__name__)

Engine = Literal["ray", "local"]
READING_COLUMNS = (SENSOR_ID, TIMESTAMP, *MEASUREMENTS)
# Ray Data's groupby default of 200 shuffle partitions took 26 s on 60k rows (docs/architecture.md); a few suffice.
DEFAULT_NUM_PARTITIONS = 4
# A source with more rejected rows than this share is refused: it is the wrong file, not noisy data.
MAX_REJECTED_SHARE = 0.05


class TrainingDataError(ValueError):
    """A training source that cannot be used: missing label, wrong columns, mostly invalid rows."""


def load_source(source: str | Path) -> pd.DataFrame:
    """A Kaggle-format CSV file or a Parquet lake directory -> readings with canonical column names."""
    path = Path(source)
    if not path.exists():
        raise TrainingDataError(f"training source {path} does not exist")
    if path.is_dir():
        from ingest.lake import read_lake

        frame = read_lake(path)
    else:
        from ingest.kaggle import read_kaggle_csv

        frame = read_kaggle_csv(path)
    return frame


def validate_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep the readings :func:`ingest.validation.validate_records` accepts and labelled 0/1.

    Returns them and the count of dropped rows by reason. More than ``MAX_REJECTED_SHARE``
    dropped is an error (wrong file, not noisy data).
    """
    missing = [c for c in (*READING_COLUMNS, LABEL) if c not in frame.columns]
    if missing:
        raise TrainingDataError(f"training data lacks columns: {', '.join(missing)}")
    if frame[LABEL].isna().all():
        raise TrainingDataError(f"training data has no {LABEL} labels (simulator output is labelled only when "
                                "loaded with its incident log)")
    # A row whose label is not 0/1 cannot train; it is dropped and counted like an invalid reading.
    labels = pd.to_numeric(frame[LABEL], errors="coerce")
    labelled = labels.isin((0, 1)).to_numpy()
    records = frame[list(READING_COLUMNS)].to_dict("records")
    for record in records:  # pandas hands out numpy scalars and Timestamps; validation wants plain values
        stamp = record[TIMESTAMP]
        if isinstance(stamp, pd.Timestamp):
            record[TIMESTAMP] = stamp.timestamp() if stamp.tzinfo else stamp.isoformat()
    batch = validate_records(records)
    reasons = Counter(p.reason for problems in batch.rejected.values() for p in problems)
    unlabelled = int((~labelled).sum())
    if unlabelled:
        reasons["bad_label"] = unlabelled
    keep = labelled[batch.index]
    rejected = len(frame) - int(keep.sum())
    if len(frame) == 0 or rejected / len(frame) > MAX_REJECTED_SHARE:
        raise TrainingDataError(f"{rejected} of {len(frame)} rows fail validation ({dict(reasons)}); "
                                f"refusing to train on more than {MAX_REJECTED_SHARE:.0%} rejected")
    if rejected:
        log.warning("training data: dropped %d invalid rows of %d: %s", rejected, len(frame), dict(reasons))
    clean = pd.DataFrame(batch.values[keep], columns=list(MEASUREMENTS))
    clean.insert(0, TIMESTAMP, batch.timestamps[keep])
    clean.insert(0, SENSOR_ID, np.asarray(batch.sensor_ids, dtype=object)[keep])
    clean[LABEL] = labels.to_numpy()[batch.index[keep]].astype(np.int64)
    return clean, dict(reasons)


def features_of_sensor(group: pd.DataFrame) -> pd.DataFrame:
    """One sensor's readings -> their features, in time order, from a fresh state."""
    group = group.sort_values(TIMESTAMP, kind="stable")
    sensor_ids = group[SENSOR_ID].astype(str).tolist()
    timestamps = group[TIMESTAMP].to_numpy(dtype=np.float64)
    values = group[list(MEASUREMENTS)].to_numpy(dtype=np.float64, na_value=np.nan)
    features = compute_features(FeatureState(capacity=1), sensor_ids, timestamps, values)
    out = pd.DataFrame(features, columns=list(FEATURE_NAMES))
    out.insert(0, TIMESTAMP, timestamps)
    out.insert(0, SENSOR_ID, sensor_ids)
    out[LABEL] = group[LABEL].to_numpy(dtype=np.int64)
    return out


def build_features(readings: pd.DataFrame, *, engine: Engine = "ray",
                   num_partitions: int = DEFAULT_NUM_PARTITIONS) -> pd.DataFrame:
    """Features of every reading, sorted by (timestamp, sensor_id); the label is carried along."""
    if engine == "local":
        parts = [features_of_sensor(g) for _, g in readings.groupby(SENSOR_ID, sort=False)]
        out = pd.concat(parts, ignore_index=True) if parts else features_of_sensor(readings)
    elif engine == "ray":
        import ray

        if not ray.is_initialized():
            raise RuntimeError("engine='ray' needs a connected Ray driver (ray.init(address=...))")
        dataset = ray.data.from_pandas(readings)
        grouped = dataset.groupby(SENSOR_ID, num_partitions=num_partitions)
        out = grouped.map_groups(features_of_sensor, batch_format="pandas").to_pandas()
        out = _plain_dtypes(out)
    else:
        raise ValueError(f"engine must be 'ray' or 'local', got {engine!r}")
    return out.sort_values([TIMESTAMP, SENSOR_ID], kind="stable").reset_index(drop=True)


def _plain_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """Ray Data's ``to_pandas()`` yields Arrow-backed dtypes (``double[pyarrow]``): back to numpy, NaN kept."""
    out = {}
    for column in frame.columns:
        if column == SENSOR_ID:
            out[column] = frame[column].astype(str).to_numpy(dtype=object)
        elif column == LABEL:
            out[column] = frame[column].to_numpy(dtype=np.int64)
        else:
            out[column] = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.DataFrame(out)


@dataclass(frozen=True)
class TimeSplit:
    """Three consecutive stretches of the timeline: train < validation < test."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    train_end: float  # first timestamp of validation
    test_start: float  # first timestamp of test

    def summary(self) -> dict[str, float | int]:
        return {"train_rows": len(self.train), "validation_rows": len(self.validation),
                "test_rows": len(self.test), "train_end": self.train_end, "test_start": self.test_start}


def split_by_time(features: pd.DataFrame, *, validation_fraction: float, test_fraction: float) -> TimeSplit:
    """Cut the timeline at time quantiles so that every test timestamp follows every training one.

    Rows are cut by timestamp, not by position: readings of several sensors at the same
    instant always land in the same split.
    """
    if not (validation_fraction > 0 and test_fraction > 0 and validation_fraction + test_fraction < 1):
        raise ValueError("validation and test fractions must be positive and sum to less than 1")
    stamps = features[TIMESTAMP].to_numpy(dtype=np.float64)
    if len(stamps) == 0:
        raise TrainingDataError("no rows to split")
    order = np.sort(stamps)
    train_end = float(order[int(len(order) * (1 - validation_fraction - test_fraction))])
    test_start = float(order[int(len(order) * (1 - test_fraction))])
    if not order[0] < train_end < test_start:
        raise TrainingDataError("the timeline has too few distinct timestamps to split into train, "
                                "validation and test")
    train = features[stamps < train_end].reset_index(drop=True)
    validation = features[(stamps >= train_end) & (stamps < test_start)].reset_index(drop=True)
    test = features[stamps >= test_start].reset_index(drop=True)
    for name, part in (("train", train), ("validation", validation), ("test", test)):
        if part[LABEL].nunique() < 2:
            log.warning("the %s split has only label %s: metrics that need both classes are undefined",
                        name, part[LABEL].iloc[0] if len(part) else "none")
    return TimeSplit(train, validation, test, train_end, test_start)


def feature_matrix(frame: pd.DataFrame, feature_names: list[str]) -> np.ndarray:
    """The named feature columns as float64 (NaN kept: the models handle it)."""
    check_feature_names(feature_names)
    return frame[list(feature_names)].to_numpy(dtype=np.float64, na_value=np.nan)


def fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of the rows (order-independent of input order: rows are hashed in their sorted order)."""
    ordered = frame.sort_values([TIMESTAMP, SENSOR_ID], kind="stable")
    hashes = pd.util.hash_pandas_object(ordered, index=False).to_numpy()
    return hashlib.sha256(hashes.tobytes()).hexdigest()
