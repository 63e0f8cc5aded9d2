"""Decoding and validating readings, a whole batch at a time.

The stream workers, the batch loader and the HTTP API all call
:func:`validate_records`; a single reading is a batch of one. Checks run per
column with numpy where they can, so a polled batch of thousands of messages
costs a few array operations per field rather than a Python loop per value.

Nothing is repaired: a missing value is ``missing_field``, never a zero; a string
``"23.5"`` is ``wrong_type``, never parsed; a value outside the plausible range
of the sensor (see :mod:`ingest.schema`) is ``out_of_range``, never clamped.

>>> batch = validate_records([{"sensor_id": "s1", "timestamp": 1654733331,
...     "temperature_c": 20.0, "humidity_pct": 57.4, "tvoc_ppb": 0, "eco2_ppm": 400,
...     "raw_h2_ticks": 12306, "raw_ethanol_ticks": 18520, "pressure_hpa": 939.7,
...     "pm1_0_ugm3": 0.0, "pm2_5_ugm3": 0.0, "nc0_5_per_cm3": 0.0,
...     "nc1_0_per_cm3": 0.0, "nc2_5_per_cm3": 0.0}, {"sensor_id": "s2"}])
>>> batch.sensor_ids, sorted({p.reason for p in batch.rejected[1]})
(['s1'], ['bad_timestamp', 'missing_field'])
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import msgspec
import numpy as np
import orjson

from ingest.schema import (
    ALIASES,
    FIELDS,
    MAX_EPOCH_SECONDS,
    MAX_MESSAGE_BYTES,
    MAX_SENSOR_ID_LENGTH,
    MEASUREMENTS,
    MIN_EPOCH_SECONDS,
    SENSOR_ID,
    TIMESTAMP,
    Reason,
)

_SENSOR_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]*")
_RFC3339_NAIVE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?", re.ASCII)
_RFC3339 = re.compile(_RFC3339_NAIVE.pattern + r"(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII)
_CANONICAL_KEYS = frozenset(MEASUREMENTS)
_OTHER_SPELLINGS = frozenset(alias for alias, name in ALIASES.items() if alias != name)
_LOWS = np.array([f.low for f in FIELDS])
_HIGHS = np.array([f.high for f in FIELDS])
_MISSING = object()
# The fast paths (see _validate_clean_batch and validate_messages).
_IDENTITY_AND_MEASUREMENTS = frozenset((SENSOR_ID, TIMESTAMP, *MEASUREMENTS))
_ROW = operator.itemgetter(SENSOR_ID, TIMESTAMP, *MEASUREMENTS)
# A reading with exactly the canonical keys, typed as the clean path needs them: msgspec refuses
# anything else (a bool, a string or null for a number, a missing or an unknown key, broken JSON).
_CleanReading = msgspec.defstruct(
    "_CleanReading",
    [(SENSOR_ID, str), (TIMESTAMP, float | str), *((name, float) for name in MEASUREMENTS)],
    forbid_unknown_fields=True, gc=False)
_decode_clean_reading = msgspec.json.Decoder(_CleanReading).decode
_MEASURED = operator.attrgetter(*MEASUREMENTS)
_NUMBER_TYPES = frozenset((float, int))
# Sensor ids already found well-formed: a fleet repeats the same few thousand ids in every batch,
# so the pattern check runs once per id, not once per reading. Bounded; beyond it ids are checked
# every time.
_WELL_FORMED_IDS: set[str] = set()
_WELL_FORMED_IDS_MAX = 200_000


@dataclass(frozen=True)
class Problem:
    """Why one reading was rejected: the field (None for the whole message) and a reason."""

    field: str | None
    reason: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "reason": self.reason, "detail": self.detail}


def dead_letter_headers(problems: Sequence[Problem]) -> list[tuple[str, bytes]]:
    """Kafka headers that say why a record is in the dead-letter topic (every writer of it uses these).

    >>> dead_letter_headers([Problem("timestamp", "bad_timestamp", "missing")])[0]
    ('reason', b'bad_timestamp')
    """
    return [
        ("reason", ",".join(sorted({p.reason for p in problems})).encode()),
        ("problems", orjson.dumps([p.as_dict() for p in problems])),
        ("detail", "; ".join(f"{p.field or 'message'}: {p.detail}" for p in problems)[:1000].encode()),
    ]


@dataclass
class ValidatedBatch:
    """The accepted readings of a batch as columns, and the problems of the rest.

    ``index[k]`` is the position in the input of the k-th accepted reading;
    ``values[k, j]`` is its measurement ``MEASUREMENTS[j]``.
    """

    index: np.ndarray
    sensor_ids: list[str | None]
    timestamps: np.ndarray
    values: np.ndarray
    rejected: dict[int, list[Problem]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)


def parse_timestamp(value: object) -> float:
    """RFC 3339 text (with an offset) or epoch seconds -> epoch seconds (float).

    Raises ``ValueError`` with the cause; naive times are refused because their
    zone is a guess.

    >>> parse_timestamp("2022-06-09T00:08:51.5Z"), parse_timestamp("2022-06-09t02:08:51.5+02:00")
    (1654733331.5, 1654733331.5)
    >>> parse_timestamp("2022-W23-4T00:08:51Z")
    Traceback (most recent call last):
    ValueError: not an RFC 3339 time (YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM))
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 64:
            raise ValueError("not an RFC 3339 time")
        # fromisoformat alone takes all of ISO 8601 and more (week dates, basic format, hours
        # only, any character as the date/time separator, NUL included): check the shape first.
        if not _RFC3339.fullmatch(text):
            if is_naive_time(text):
                raise ValueError("RFC 3339 time without a UTC offset")
            raise ValueError("not an RFC 3339 time (YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM))")
        try:
            parsed = datetime.fromisoformat(text.upper())  # RFC 3339 allows "t" and "z"; fromisoformat does not
        except ValueError as err:
            raise ValueError(f"not an RFC 3339 time: {err}") from None
        seconds = parsed.timestamp()
    else:
        raise ValueError(f"a {type(value).__name__} is not a time")
    if not math.isfinite(seconds) or not MIN_EPOCH_SECONDS <= seconds <= MAX_EPOCH_SECONDS:
        raise ValueError("time outside 2000-01-01..2100-01-01")
    return seconds


def is_naive_time(value: object) -> bool:
    """True for RFC 3339-shaped text without a UTC offset (``2026-12-02 05:20:51``), whose zone is a guess.

    >>> is_naive_time("2026-12-02 05:20:51"), is_naive_time("2026-12-02T05:20:51Z"), is_naive_time(1.0)
    (True, False, False)
    """
    return isinstance(value, str) and _RFC3339_NAIVE.fullmatch(value.strip()) is not None


def format_timestamp(seconds: float) -> str:
    """Epoch seconds -> RFC 3339 UTC text with milliseconds."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decode_messages(raws: Sequence[bytes | None]) -> tuple[list[object], dict[int, list[Problem]]]:
    """Kafka message values -> decoded JSON documents, and the problems of those that are not.

    An undecodable message leaves ``None`` in its place so positions keep matching offsets.
    """
    try:
        # The usual batch (no tombstone, nothing too large, all JSON) in one pass of C calls;
        # anything else takes the message-by-message path below, which says what is wrong.
        if max(map(len, raws), default=0) <= MAX_MESSAGE_BYTES:
            return list(map(orjson.loads, raws)), {}
    except (TypeError, orjson.JSONDecodeError):
        pass
    records: list[object] = []
    rejected: dict[int, list[Problem]] = {}
    for i, raw in enumerate(raws):
        if raw is None:
            rejected[i] = [Problem(None, Reason.NOT_JSON, "empty message (tombstone)")]
            records.append(None)
        elif len(raw) > MAX_MESSAGE_BYTES:
            rejected[i] = [Problem(None, Reason.TOO_LARGE, f"{len(raw)} bytes > {MAX_MESSAGE_BYTES}")]
            records.append(None)
        else:
            try:
                records.append(orjson.loads(raw))
            except orjson.JSONDecodeError as err:
                rejected[i] = [Problem(None, Reason.NOT_JSON, str(err)[:200])]
                records.append(None)
    return records, rejected


def validate_records(
    records: Sequence[object],
    *,
    require_identity: bool = True,
    skip: Mapping[int, object] | None = None,
) -> ValidatedBatch:
    """Validate decoded readings; every problem of every reading is reported.

    ``require_identity`` demands ``sensor_id`` and ``timestamp`` (the stream and
    the lake); the HTTP API predicts on measurements alone and passes False.
    ``skip`` holds positions already rejected (by :func:`decode_messages`).
    """
    if not skip:
        clean = _validate_clean_batch(records)
        if clean is not None:
            return clean
    return _validate_each(records, require_identity, skip)


def _validate_clean_batch(records: Sequence[object]) -> ValidatedBatch | None:
    """A batch of decoded readings in which every reading is valid, checked column by column; None if any is not.

    The stream's batches are almost always clean: this path makes each check one
    C-level pass over a column (about 4x faster than :func:`_validate_each`). On the
    first doubt it gives up and the whole batch goes through :func:`_validate_each`,
    which finds and names every problem, so both paths accept exactly the same readings.
    """
    # Objects with exactly the canonical keys (so no other spelling, nothing to rename).
    if set(map(type, records)) != {dict} or set(map(len, records)) != {len(_IDENTITY_AND_MEASUREMENTS)}:
        return None
    try:
        columns = list(zip(*map(_ROW, records), strict=True))
    except KeyError:
        return None
    sensor_ids, stamps, measurements = columns[0], columns[1], columns[2:]
    if not set(map(type, chain.from_iterable(measurements))) <= _NUMBER_TYPES:
        return None  # bool, str, None, ...: a wrong type or a missing value
    try:
        values = np.array(measurements, dtype=np.float64).T.copy()
    except OverflowError:
        return None
    checked = _check_rows(sensor_ids, stamps, values)
    if checked is None or not checked[0].all():
        return None
    return ValidatedBatch(index=np.arange(len(values), dtype=np.int64), sensor_ids=list(sensor_ids),
                          timestamps=checked[1], values=values)


def _check_rows(sensor_ids: Sequence[object], stamps: Sequence[object],
                values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The checks the fast paths share, on columns whose measurements are numbers: ranges, times, sensor ids.

    Returns which rows pass and every row's time (NaN where it is bad), or None where a
    column cannot be checked this way (an unhashable sensor id, an integer time too large
    for a float): the caller then takes the careful path.
    """
    ok = ((values >= _LOWS) & (values <= _HIGHS)).all(axis=1)  # also False for NaN and infinities
    try:
        if set(map(type, stamps)) <= _NUMBER_TYPES:
            timestamps = np.array(stamps, dtype=np.float64)
            ok &= (timestamps >= MIN_EPOCH_SECONDS) & (timestamps <= MAX_EPOCH_SECONDS)
        else:
            timestamps = np.array(list(map(_time_or_nan, stamps)), dtype=np.float64)
            ok &= ~np.isnan(timestamps)
        fresh = set(sensor_ids) - _WELL_FORMED_IDS
    except (OverflowError, TypeError):  # TypeError: an unhashable sensor_id
        return None
    malformed = {sensor_id for sensor_id in fresh
                 if not (type(sensor_id) is str and 0 < len(sensor_id) <= MAX_SENSOR_ID_LENGTH
                         and _SENSOR_ID_PATTERN.fullmatch(sensor_id))}
    if malformed:
        ok &= np.fromiter((sensor_id not in malformed for sensor_id in sensor_ids), dtype=bool, count=len(ok))
    if len(_WELL_FORMED_IDS) + len(fresh) <= _WELL_FORMED_IDS_MAX:
        _WELL_FORMED_IDS.update(fresh - malformed)
    return ok, timestamps


def _time_or_nan(stamp: object) -> float:
    try:
        return parse_timestamp(stamp)
    except (ValueError, OverflowError, OSError):
        return math.nan


def _decode_clean_readings(raws: Sequence[bytes | None]) -> tuple[list[Any], list[int]]:
    """The messages msgspec decodes into ``_CleanReading``, and their positions in ``raws``.

    msgspec decodes each message into typed fields (0.9 us a reading here, against 1.6 us
    for orjson's dict), so the type checks are done by the time the columns exist. The
    usual batch decodes in one pass; the first refusal makes it go message by message.
    """
    try:
        if max(map(len, raws), default=0) <= MAX_MESSAGE_BYTES:
            return list(map(_decode_clean_reading, raws)), list(range(len(raws)))
    except (TypeError, msgspec.DecodeError):  # TypeError: a tombstone (None); ValidationError is a DecodeError
        pass
    readings: list[Any] = []
    positions: list[int] = []
    for i, raw in enumerate(raws):
        if raw is not None and len(raw) <= MAX_MESSAGE_BYTES:
            try:
                readings.append(_decode_clean_reading(raw))
                positions.append(i)
            except msgspec.DecodeError:
                pass
    return readings, positions


def _validate_each(records: Sequence[object], require_identity: bool,
                   skip: Mapping[int, object] | None) -> ValidatedBatch:
    """Every problem of every reading (the careful path of :func:`validate_records`)."""
    problems: dict[int, list[Problem]] = {}

    def reject(i: int, name: str | None, reason: str, detail: str) -> None:
        problems.setdefault(i, []).append(Problem(name, reason, detail))

    docs: list[Mapping[str, Any]] = []
    live: list[int] = []
    for i, record in enumerate(records):
        if skip is not None and i in skip:
            continue
        if not isinstance(record, dict):
            reject(i, None, Reason.NOT_OBJECT, f"a JSON {type(record).__name__}, not an object")
            continue
        if not (record.keys() >= _CANONICAL_KEYS) or record.keys() & _OTHER_SPELLINGS:
            record = _to_canonical_names(i, record, reject)
        docs.append(record)
        live.append(i)

    m = len(docs)
    values = np.full((m, len(MEASUREMENTS)), np.nan)
    # Problems of the measurements as (column, kind, row, problem): the range checks run once on
    # the whole array (12 columns checked one by one cost 110 us for a single reading, the HTTP
    # API's usual batch), and the problems are then reported in the order of a column-by-column
    # pass: by field, and within a field the typing problems, the non-finite values, the ranges.
    found: list[tuple[int, int, int, Problem]] = []
    for j, name in enumerate(MEASUREMENTS):
        def note(i: int, name: str, reason: str, detail: str, j: int = j) -> None:
            found.append((j, 0, i, Problem(name, reason, detail)))

        column = [doc.get(name, _MISSING) for doc in docs]
        if not _all_numbers(column):
            column = [_as_number(live[k], name, v, note) for k, v in enumerate(column)]
        try:
            values[:, j] = column
        except OverflowError:
            column = [_as_number(live[k], name, v, note) for k, v in enumerate(column)]
            values[:, j] = column
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(values)
        flagged = ~finite | (values < _LOWS) | (values > _HIGHS)
    if flagged.any():
        typed = {(i, j) for j, _, i, _ in found}
        for k, j in zip(*np.nonzero(flagged), strict=True):
            i, name, value = live[k], MEASUREMENTS[j], float(values[k, j])
            if finite[k, j]:
                spec = FIELDS[j]
                found.append((j, 2, i, Problem(name, Reason.OUT_OF_RANGE,
                                               f"{value:g} outside {spec.low:g}..{spec.high:g} {spec.unit} "
                                               f"({spec.sensor})")))
            # A field already refused (missing or a wrong type, NaN here; or spelled twice with
            # different values) is not also not_finite. An infinity is not_finite only, not also
            # out of range.
            elif (i, j) not in typed and not _already_rejected(problems, i, name):
                found.append((j, 1, i, Problem(name, Reason.NOT_FINITE, f"{value!r} is not a finite number")))
    found.sort(key=lambda f: f[:3])
    for _, _, i, problem in found:
        problems.setdefault(i, []).append(problem)

    sensor_ids: list[str | None] = []
    timestamps = np.full(m, np.nan)
    for k, doc in enumerate(docs):
        i = live[k]
        sensor_id = doc.get(SENSOR_ID, _MISSING)
        if sensor_id is _MISSING or sensor_id is None:
            if require_identity:
                reject(i, SENSOR_ID, Reason.BAD_SENSOR_ID, "missing")
            sensor_id = None
        elif not (isinstance(sensor_id, str) and 0 < len(sensor_id) <= MAX_SENSOR_ID_LENGTH
                  and _SENSOR_ID_PATTERN.fullmatch(sensor_id)):
            reject(i, SENSOR_ID, Reason.BAD_SENSOR_ID,
                   f"must be 1..{MAX_SENSOR_ID_LENGTH} characters of A-Z a-z 0-9 . _ : -")
        sensor_ids.append(sensor_id)
        stamp = doc.get(TIMESTAMP, _MISSING)
        if stamp is _MISSING or stamp is None:
            if require_identity:
                reject(i, TIMESTAMP, Reason.BAD_TIMESTAMP, "missing")
            continue
        try:
            timestamps[k] = parse_timestamp(stamp)
        except (ValueError, OverflowError, OSError) as err:
            reject(i, TIMESTAMP, Reason.BAD_TIMESTAMP, str(err))

    keep = np.array([i not in problems for i in live], dtype=bool)
    index = np.array(live, dtype=np.int64)[keep] if m else np.zeros(0, dtype=np.int64)
    return ValidatedBatch(
        index=index,
        sensor_ids=[s for s, ok in zip(sensor_ids, keep, strict=True) if ok],
        timestamps=timestamps[keep] if m else timestamps,
        values=values[keep] if m else values,
        rejected=problems,
    )


def validate_messages(raws: Sequence[bytes | None]) -> ValidatedBatch:
    """Raw Kafka values -> a validated batch; positions in ``rejected`` match ``raws``.

    The readings msgspec decodes and that pass :func:`_check_rows` are accepted on the fast
    path, as columns. Every other message, and only those, goes the careful way
    (:func:`_validate_messages_carefully`), which names each problem; both parts are merged
    back into input order. So a sensor sending garbage into every poll does not send every
    poll down the slow path.
    """
    readings, positions = _decode_clean_readings(raws)
    if not readings:
        return _validate_messages_carefully(raws)
    values = np.array(list(map(_MEASURED, readings)), dtype=np.float64)
    sensor_ids = [r.sensor_id for r in readings]
    checked = _check_rows(sensor_ids, [r.timestamp for r in readings], values)
    if checked is None:
        return _validate_messages_carefully(raws)
    ok, timestamps = checked
    if len(positions) == len(raws) and ok.all():  # the usual batch
        return ValidatedBatch(index=np.arange(len(raws), dtype=np.int64), sensor_ids=sensor_ids,
                              timestamps=timestamps, values=values)
    fast = np.array(positions, dtype=np.int64)[ok]
    rest = np.setdiff1d(np.arange(len(raws), dtype=np.int64), fast)
    slow = _validate_messages_carefully([raws[i] for i in rest.tolist()])
    # Both parts back into input (offset) order: the stream's per-sensor state needs it.
    index = np.concatenate([fast, rest[slow.index]])
    order = np.argsort(index, kind="stable")
    merged_ids = [sensor_id for sensor_id, good in zip(sensor_ids, ok.tolist(), strict=True) if good]
    merged_ids += slow.sensor_ids
    return ValidatedBatch(
        index=index[order],
        sensor_ids=[merged_ids[k] for k in order.tolist()],
        timestamps=np.concatenate([timestamps[ok], slow.timestamps])[order],
        values=np.concatenate([values[ok], slow.values])[order],
        rejected={int(rest[pos]): problems for pos, problems in slow.rejected.items()},
    )


def _validate_messages_carefully(raws: Sequence[bytes | None]) -> ValidatedBatch:
    """``orjson`` to dicts, then :func:`validate_records`: every problem of every message, named."""
    records, undecodable = decode_messages(raws)
    batch = validate_records(records, skip=undecodable)
    batch.rejected.update(undecodable)
    return batch


def _to_canonical_names(i: int, record: Mapping[str, Any], reject) -> dict[str, Any]:
    """Rename seed and Kaggle spellings to canonical names; two spellings that disagree are an error."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = ALIASES.get(key, key)
        if name in out and out[name] != value:
            reject(i, name, Reason.CONFLICTING_ALIASES, f"{key!r} disagrees with another spelling of {name}")
            continue
        out[name] = value
    return out


def _all_numbers(column: list[object]) -> bool:
    kinds = set(map(type, column))
    return kinds <= {float, int}


def _as_number(i: int, name: str, value: object, reject) -> float:
    """One value of a column that is not all numbers: classify what is wrong with it."""
    if value is _MISSING:
        reject(i, name, Reason.MISSING_FIELD, "missing")
    elif value is None:
        reject(i, name, Reason.MISSING_FIELD, "null")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        reject(i, name, Reason.WRONG_TYPE, f"a {type(value).__name__}, not a number")
    else:
        try:
            return float(value)
        except OverflowError:
            reject(i, name, Reason.OUT_OF_RANGE, "integer too large for a float")
    return math.nan


def _already_rejected(problems: dict[int, list[Problem]], i: int, name: str) -> bool:
    return any(p.field == name for p in problems.get(i, ()))
