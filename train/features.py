"""Model features: one definition for the stream and the batch path.

Two kinds of features:

- **point** features need one reading: the 12 measurements and a few ratios.
  The HTTP API predicts from a single reading, so models served there use
  only these.
- **windowed** features need the sensor's recent history, in time order: the
  change since the previous reading, its rate per second, the rolling mean and
  spread over the last ``WINDOW`` readings, and an EWMA.

:func:`features_for_slots` is the only implementation. It takes a batch of
readings of many sensors (by slot) plus a :class:`FeatureHistory` (what is carried
between batches) and returns the feature matrix, updating the history. The stream's
engine calls it once per polled batch with its long-lived history, on the slot
table it shares with its detectors; the batch path calls :func:`compute_features`
(sensor ids, a :class:`FeatureState` with its own table) once per sensor with a
fresh state. Because windows are built from the carried
history, splitting a sequence into batches gives the same numbers (the parity
test checks this).

``UTC`` and ``CNT`` are refused as features: in the Kaggle data they leak the label.

>>> import numpy as np
>>> from ingest.schema import MEASUREMENTS
>>> state = FeatureState()
>>> values = np.tile(np.arange(1.0, 13.0), (3, 1)); values[:, 2] = [0.0, 10.0, 40.0]
>>> x = compute_features(state, ["s1"] * 3, np.array([0.0, 1.0, 2.0]), values)
>>> x[:, FEATURE_NAMES.index("tvoc_ppb_delta")].tolist()
[nan, 10.0, 30.0]
>>> int(state.count[state.slots["s1"]])
3
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ingest.schema import LEAKY_COLUMNS, MEASUREMENTS
from train.slot_table import SlotArrays, SlotStateOwner, SlotTable

# Bump when any definition below changes: models record it and refuse a mismatch.
FEATURE_VERSION = 1
WINDOW = 10  # readings in the rolling window
EWMA_ALPHA = 0.1

# Signals that get windowed features (pressure and the smaller particle bins add little).
WINDOWED_SIGNALS: tuple[str, ...] = (
    "temperature_c", "humidity_pct", "tvoc_ppb", "eco2_ppm", "raw_h2_ticks",
    "raw_ethanol_ticks", "pm2_5_ugm3", "nc0_5_per_cm3",
)
_SIGNAL_COLUMNS = np.array([MEASUREMENTS.index(s) for s in WINDOWED_SIGNALS])
_WINDOWED_KINDS = ("delta", "rate_per_s", "mean_w", "std_w", "ewma")

RATIO_FEATURES: tuple[str, ...] = ("h2_ethanol_ratio", "pm2_5_pm1_0_ratio", "nc1_0_nc0_5_ratio")
POINT_FEATURES: tuple[str, ...] = (*MEASUREMENTS, *RATIO_FEATURES)
WINDOWED_FEATURES: tuple[str, ...] = tuple(
    f"{signal}_{kind}" for kind in _WINDOWED_KINDS for signal in WINDOWED_SIGNALS
)
FEATURE_NAMES: tuple[str, ...] = (*POINT_FEATURES, *WINDOWED_FEATURES)


class LeakyFeatureError(ValueError):
    """A feature list that names a column known to leak the label."""


def check_feature_names(names: Iterable[str]) -> list[str]:
    """Refuse ``UTC``/``CNT`` (any case) and names this module does not define."""
    names = list(names)
    leaky = [n for n in names if n.upper() in LEAKY_COLUMNS]
    if leaky:
        raise LeakyFeatureError(
            f"{', '.join(leaky)} cannot be a feature: in the Kaggle data UTC and CNT leak the label "
            "(recording sessions are contiguous in time and CNT counts samples within one)")
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown:
        raise ValueError(f"unknown features: {', '.join(unknown)}")
    return names


def needs_history(feature_names: Iterable[str]) -> list[str]:
    """The features of ``feature_names`` that one reading cannot give (windowed ones).

    The rule of what the HTTP API can serve: a model needing any of these cannot
    predict from a single reading (the registry refuses to promote it, Serve to load it).

    >>> needs_history(["temperature_c", "tvoc_ppb_delta", "h2_ethanol_ratio"])
    ['tvoc_ppb_delta']
    """
    return [name for name in feature_names if name not in POINT_FEATURES]


def point_features(values: np.ndarray) -> np.ndarray:
    """(n, 12) measurements -> (n, len(POINT_FEATURES)); ratios are NaN where undefined."""
    values = np.asarray(values, dtype=np.float64)
    col = {name: values[:, j] for j, name in enumerate(MEASUREMENTS)}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.column_stack([
            _safe_ratio(col["raw_h2_ticks"], col["raw_ethanol_ticks"]),
            _safe_ratio(col["pm2_5_ugm3"], col["pm1_0_ugm3"]),
            _safe_ratio(col["nc1_0_per_cm3"], col["nc0_5_per_cm3"]),
        ])
    return np.hstack([values, ratios])


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = num / den
    out[~np.isfinite(out)] = np.nan
    return out


class FeatureHistory(SlotStateOwner):
    """What the windowed features carry between batches, per sensor slot.

    Per slot: the last ``WINDOW - 1`` values of each windowed signal (NaN where there
    were fewer readings), the last timestamp, the EWMA and a count. It is a slot-state
    part like the detectors' (resize, reset, export, import by slot), so the stream's
    :class:`actors.detection.DetectionEngine` keeps it on its one slot table beside
    them; the batch path wraps it in a :class:`FeatureState`.
    """

    def __init__(self, capacity: int = 64) -> None:
        k = len(WINDOWED_SIGNALS)
        self.state = SlotArrays({
            "history": ((WINDOW - 1, k), np.float64, np.nan),
            "last_timestamp": ((), np.float64, np.nan),
            "ewma": ((k,), np.float64, np.nan),
            "count": ((), np.int64, 0),
        }, capacity)

    @property
    def history(self) -> np.ndarray:
        return self.state["history"]

    @property
    def last_timestamp(self) -> np.ndarray:
        return self.state["last_timestamp"]

    @property
    def ewma(self) -> np.ndarray:
        return self.state["ewma"]

    @property
    def count(self) -> np.ndarray:
        return self.state["count"]


class FeatureState(FeatureHistory):
    """A feature history with its own slot table: for callers that keep no other per-sensor state.

    The batch path (one fresh state per sensor), tests and offline tools use it; the
    stream's engine keeps a bare :class:`FeatureHistory` on the table it shares with
    its detectors.
    """

    def __init__(self, capacity: int = 64) -> None:
        super().__init__(capacity)
        self.table = SlotTable(capacity, self.resize)

    @property
    def slots(self) -> dict[str, int]:
        return self.table.slots

    def __len__(self) -> int:
        return len(self.table)


def compute_features(state: FeatureState, sensor_ids: Sequence[str], timestamps: np.ndarray,
                     values: np.ndarray) -> np.ndarray:
    """:func:`features_for_slots` for sensor ids, on a state with its own slot table."""
    return features_for_slots(state, state.table.lookup(sensor_ids), timestamps, values)


def features_for_slots(state: FeatureHistory, slots: np.ndarray, timestamps: np.ndarray,
                       values: np.ndarray) -> np.ndarray:
    """Features of a batch of readings (each slot's rows in time order); updates ``state``.

    ``slots[i]`` is the sensor slot of row i. Returns an array of shape
    ``(n, len(FEATURE_NAMES))`` in input row order. Windowed features are NaN where
    history is too short (the first reading of a sensor has no delta), never zero.
    """
    n = len(slots)
    values = np.asarray(values, dtype=np.float64)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    out = np.empty((n, len(FEATURE_NAMES)))
    out[:, : len(POINT_FEATURES)] = point_features(values)
    if n == 0:
        return out

    slots = np.asarray(slots, dtype=np.int64)
    # Group rows by sensor, keeping each sensor's rows in input (time) order.
    order = np.argsort(slots, kind="stable")
    sorted_slots = slots[order]
    starts = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
    seg_slots = sorted_slots[starts]
    seg_len = np.diff(np.r_[starts, n])
    rank = np.repeat(np.arange(len(starts)), seg_len)  # segment of each sorted row
    pos_in_seg = np.arange(n) - starts[rank]

    # Lay out, per segment, the carried history (WINDOW-1 rows) then the new rows,
    # so that every window and every "previous row" stays inside one sensor.
    h = WINDOW - 1
    x = values[order][:, _SIGNAL_COLUMNS]
    t = timestamps[order]
    y_pos = starts[rank] + (rank + 1) * h + pos_in_seg  # row of each sorted reading in y
    total = n + len(starts) * h
    y = np.full((total, x.shape[1]), np.nan)
    ty = np.full(total, np.nan)
    seg_base = starts + np.arange(len(starts)) * h
    # One reading per sensor (the stream's usual poll): segment i is rows [i*WINDOW, (i+1)*WINDOW)
    # of y, so its blocks are plain slices of a reshaped view instead of gathers (same numbers).
    one_each = len(starts) == n
    blocks = y.reshape(n, WINDOW, x.shape[1]) if one_each else None
    if blocks is not None:
        blocks[:, :h] = state.history[seg_slots]
        blocks[:, h] = x
    else:
        y[seg_base[:, None] + np.arange(h)[None, :]] = state.history[seg_slots]
        y[y_pos] = x
    ty[seg_base + h - 1] = state.last_timestamp[seg_slots]
    ty[y_pos] = t

    prev = y[y_pos - 1]
    delta = x - prev
    dt = t - ty[y_pos - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = delta / np.where(dt > 0, dt, np.nan)[:, None]
    windows = np.lib.stride_tricks.sliding_window_view(y, WINDOW, axis=0)[y_pos - h]  # (n, k, WINDOW)
    valid = np.isfinite(windows)
    if valid.all():  # every window full (the steady state): the same sums without the masking
        mean = windows.sum(axis=2) / WINDOW
        spread = np.sqrt(np.maximum(((windows - mean[..., None]) ** 2).sum(axis=2) / WINDOW, 0))
    else:
        counts = valid.sum(axis=2)
        filled = np.where(valid, windows, 0.0)
        mean = filled.sum(axis=2) / counts
        spread = np.sqrt(np.maximum((np.where(valid, windows - mean[..., None], 0.0) ** 2).sum(axis=2) / counts,
                                    0))

    ewma = _ewma(x, rank, pos_in_seg, state.ewma[seg_slots], seg_len)

    windowed = np.hstack([delta, rate, mean, spread, ewma])
    out[order, len(POINT_FEATURES):] = windowed

    # Carry the history forward: the last WINDOW-1 rows of each segment's y block.
    if blocks is not None:
        state.history[seg_slots] = blocks[:, 1:]
    else:
        state.history[seg_slots] = y[(seg_base + h + seg_len)[:, None] - h + np.arange(h)[None, :]]
    state.last_timestamp[seg_slots] = ty[seg_base + h + seg_len - 1]
    state.ewma[seg_slots] = ewma[starts + seg_len - 1]
    state.count[seg_slots] += seg_len
    return out


def _ewma(x: np.ndarray, rank: np.ndarray, pos: np.ndarray, start: np.ndarray, seg_len: np.ndarray) -> np.ndarray:
    """EWMA per segment, continuing from ``start`` (NaN: begin at the first value).

    Steps run across all segments at once: the loop is as long as the longest
    segment, which is short in the stream (many sensors, few rows each) and
    long only in the batch path, where it is a tight loop over one sensor.
    """
    a = EWMA_ALPHA
    if len(seg_len) == len(x):  # one reading per segment: a single step, rows are the segments
        return np.where(np.isnan(start), x, a * x + (1 - a) * start)
    out = np.empty_like(x)
    current = start.copy()
    rows_by_step = np.argsort(pos, kind="stable")
    step_bounds = np.searchsorted(pos[rows_by_step], np.arange(seg_len.max() + 1))
    for step in range(seg_len.max()):
        rows = rows_by_step[step_bounds[step]: step_bounds[step + 1]]
        segs = rank[rows]
        prev = current[segs]
        xv = x[rows]
        # Where there is no EWMA yet (new sensor, or a NaN value), start from the value.
        nxt = np.where(np.isnan(prev), xv, a * xv + (1 - a) * prev)
        current[segs] = nxt
        out[rows] = nxt
    return out
