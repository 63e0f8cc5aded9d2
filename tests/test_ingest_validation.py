"""Validation of readings: the malformed corpus, and properties of valid and corrupted readings."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.malformed_corpus import CASES, VALID, pairs
from ingest.reading import InvalidReading, Reading, encode_batch, encode_message
from ingest.schema import (
    FIELDS,
    MAX_EPOCH_SECONDS,
    MEASUREMENTS,
    MIN_EPOCH_SECONDS,
    SENSOR_ID,
    TIMESTAMP,
    Reason,
)
from ingest.validation import validate_messages, validate_records

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_corpus_is_large_and_varied():
    assert len(CASES) >= 20
    assert len({c.raw for c in CASES}) == len(CASES), "every case is a distinct message"
    assert {c.reason for c in CASES} == set(Reason.ALL) - {Reason.NOT_FINITE}
    assert pairs()[0] == (CASES[0].raw, CASES[0].reason)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_malformed_message_is_rejected_with_its_reason(case):
    batch = validate_messages([case.raw])
    assert len(batch) == 0
    assert {(p.reason, p.field) for p in batch.rejected[0]} == {(case.reason, case.field)}
    with pytest.raises(InvalidReading):
        Reading.from_message(case.raw)


def test_corpus_in_one_batch_keeps_positions_and_the_valid_reading():
    raws = [c.raw for c in CASES]
    raws.insert(5, orjson.dumps(VALID))
    batch = validate_messages(raws)
    assert batch.index.tolist() == [5]
    assert sorted(batch.rejected) == [k for k in range(len(raws)) if k != 5]


def test_nan_in_a_decoded_value_is_not_finite_never_zero():
    batch = validate_records([VALID | {"tvoc_ppb": math.nan}, VALID | {"pm2_5_ugm3": math.inf}])
    assert [p.reason for k in (0, 1) for p in batch.rejected[k]] == [Reason.NOT_FINITE, Reason.NOT_FINITE]


# --- properties ------------------------------------------------------------------------------

sensor_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,40}", fullmatch=True)
timestamps = st.floats(MIN_EPOCH_SECONDS, MAX_EPOCH_SECONDS, allow_nan=False)


@st.composite
def readings(draw) -> Reading:
    values = {f.name: draw(st.floats(f.low, f.high, allow_nan=False, allow_infinity=False)) for f in FIELDS}
    return Reading(draw(sensor_ids), draw(timestamps), values)


@FAST
@given(readings())
def test_valid_readings_round_trip_through_the_wire(reading):
    assert Reading.from_message(reading.to_message()) == reading


@FAST
@given(st.lists(readings(), max_size=20),
       st.lists(st.sampled_from(["x},{y", '"},{"', "}", "{", ",", "plain"]), max_size=3))
def test_batch_encoding_is_byte_for_byte_the_single_encoding(batch_of, odd_ids):
    ids = [r.sensor_id for r in batch_of] + odd_ids  # odd ids (invalid, but encodable) force the fallback
    stamps = [r.timestamp for r in batch_of] + [1.7e9] * len(odd_ids)
    rows = [[r.values[m] for m in MEASUREMENTS] for r in batch_of] + [[1.0] * len(MEASUREMENTS)] * len(odd_ids)
    expected = [encode_message(s, t, dict(zip(MEASUREMENTS, row, strict=True)))
                for s, t, row in zip(ids, stamps, rows, strict=True)]
    assert [bytes(m) for m in encode_batch(ids, stamps, rows)] == expected


@FAST
@given(st.lists(readings(), min_size=1, max_size=20))
def test_a_batch_of_valid_readings_is_accepted_whole_and_in_order(batch_of):
    batch = validate_messages([r.to_message() for r in batch_of])
    assert not batch.rejected
    assert batch.sensor_ids == [r.sensor_id for r in batch_of]
    assert batch.values.tolist() == [[r.values[m] for m in MEASUREMENTS] for r in batch_of]


def _corruptions(field):
    """(description, value or a marker, expected reason) for one measurement field."""
    return st.sampled_from([
        ("missing", "__missing__", Reason.MISSING_FIELD),
        ("null", None, Reason.MISSING_FIELD),
        ("string", str(field.low), Reason.WRONG_TYPE),
        ("bool", True, Reason.WRONG_TYPE),
        ("list", [field.low], Reason.WRONG_TYPE),
        ("below", field.low - max(1.0, abs(field.low)), Reason.OUT_OF_RANGE),
        ("above", field.high + max(1.0, abs(field.high)), Reason.OUT_OF_RANGE),
    ])


@FAST
@given(readings(), st.sampled_from(FIELDS), st.data())
def test_any_single_field_corruption_is_rejected_naming_that_field(reading, field, data):
    what, value, reason = data.draw(_corruptions(field))
    doc = orjson.loads(reading.to_message())
    if what == "missing":
        del doc[field.name]
    else:
        doc[field.name] = value
    batch = validate_messages([orjson.dumps(doc)])
    assert [(p.field, p.reason) for p in batch.rejected[0]] == [(field.name, reason)]


BAD_IDENTITY = {
    SENSOR_ID: [None, "", "a b", "x/y", "-leading-dash", "é", 12, ["x"], "s" * 129],
    TIMESTAMP: [None, "", "soon", "2024-01-01T00:00:00", "2024-13-01T00:00:00Z", True, [1], 0, 1e12, -5],
}


@FAST
@given(readings(), st.sampled_from([SENSOR_ID, TIMESTAMP]), st.data())
def test_identity_corruptions_name_the_identity_field(reading, name, data):
    doc = orjson.loads(reading.to_message())
    doc[name] = data.draw(st.sampled_from(BAD_IDENTITY[name]))
    reasons = {(p.field, p.reason) for p in validate_messages([orjson.dumps(doc)]).rejected[0]}
    assert reasons == {(name, Reason.BAD_SENSOR_ID if name == SENSOR_ID else Reason.BAD_TIMESTAMP)}


@FAST
@given(readings(), st.lists(st.sampled_from(["seed", "kaggle"]), min_size=len(FIELDS), max_size=len(FIELDS)),
       st.lists(st.booleans(), min_size=len(FIELDS), max_size=len(FIELDS)))
def test_seed_and_kaggle_spellings_are_accepted(reading, spellings, renamed):
    doc = {SENSOR_ID: reading.sensor_id, TIMESTAMP: reading.timestamp}
    for f, spelling, rename in zip(FIELDS, spellings, renamed, strict=True):
        doc[getattr(f, spelling) if rename else f.name] = reading.values[f.name]
    assert Reading.from_message(orjson.dumps(doc)) == reading


@FAST
@given(readings(), st.sampled_from(FIELDS))
def test_two_spellings_agreeing_are_fine_and_disagreeing_are_rejected(reading, field):
    value = reading.values[field.name]
    agree = orjson.loads(reading.to_message()) | {field.kaggle: value}
    assert not validate_messages([orjson.dumps(agree)]).rejected
    other = field.low if value != field.low else field.high
    disagree = orjson.loads(reading.to_message()) | {field.seed: other}
    if field.seed == field.name:
        disagree = orjson.loads(reading.to_message()) | {field.kaggle: other}
    problems = validate_messages([orjson.dumps(disagree)]).rejected[0]
    assert [(p.field, p.reason) for p in problems] == [(field.name, Reason.CONFLICTING_ALIASES)]


@FAST
@given(readings(), st.integers(-12, 14))
def test_rfc3339_timestamps_with_any_offset_are_the_same_instant(reading, offset_hours):
    from datetime import timedelta, timezone

    seconds = round(reading.timestamp, 3)
    zone = timezone(timedelta(hours=offset_hours))
    text = datetime.fromtimestamp(seconds, UTC).astimezone(zone).isoformat(timespec="milliseconds")
    doc = orjson.loads(reading.to_message()) | {TIMESTAMP: text}
    batch = validate_messages([orjson.dumps(doc)])
    assert not batch.rejected
    assert batch.timestamps[0] == pytest.approx(seconds, abs=1e-3)
