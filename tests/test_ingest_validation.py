"""Validation of readings: the adversarial corpus, properties of valid and corrupted readings, and a
property-based fuzz of the decode-and-validate path the stream workers run on every Kafka value."""

from __future__ import annotations

import collections
import math
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.reading import InvalidReading, Reading, encode_batch, encode_message
from ingest.schema import (
    ALIASES,
    FIELDS,
    MAX_EPOCH_SECONDS,
    MAX_MESSAGE_BYTES,
    MEASUREMENTS,
    MIN_EPOCH_SECONDS,
    SENSOR_ID,
    TIMESTAMP,
    Reason,
)
from ingest.validation import ValidatedBatch, validate_messages, validate_records
from tests.malformed_corpus import CASES, ODD_BUT_VALID, VALID, pairs, random_payloads

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


@pytest.mark.parametrize("case", ODD_BUT_VALID, ids=[c.name for c in ODD_BUT_VALID])
def test_odd_but_valid_messages_are_accepted(case):
    batch = validate_messages([case.raw])
    assert not batch.rejected and batch.sensor_ids == [case.sensor_id]
    assert Reading.from_message(case.raw).sensor_id == case.sensor_id


def test_duplicate_keys_keep_the_last_value_and_validate_it():
    odd = {c.name: c for c in ODD_BUT_VALID}["duplicate key, the last one valid"]
    assert odd.raw.count(b'"temperature_c"') == 2
    assert Reading.from_message(odd.raw).values["temperature_c"] == 21.5  # the last one


def test_nan_in_a_decoded_value_is_not_finite_never_zero():
    batch = validate_records([VALID | {"tvoc_ppb": math.nan}, VALID | {"pm2_5_ugm3": math.inf}])
    assert [p.reason for k in (0, 1) for p in batch.rejected[k]] == [Reason.NOT_FINITE, Reason.NOT_FINITE]



def test_every_problem_of_a_reading_is_listed_in_field_order():
    """Typing, non-finite and range problems interleave by field, as a column-by-column pass finds them;
    a conflicting spelling is found first (while renaming), the identity last."""
    doc = VALID | {"temperature_c": -math.inf, "humidity_pct": None, "tvoc_ppb": -5.0, "eco2_ppm": "400",
                   "eCO2": 401.0, "pm1_0_ugm3": math.nan, "sensor_id": "bad id"}
    batch = validate_records([VALID, doc, VALID | {"tvoc_ppb": math.inf}])
    assert list(batch.rejected) == [1, 2] and batch.sensor_ids == [VALID["sensor_id"]]
    assert [(p.field, p.reason) for p in batch.rejected[1]] == [
        ("eco2_ppm", Reason.CONFLICTING_ALIASES),
        ("temperature_c", Reason.NOT_FINITE),
        ("humidity_pct", Reason.MISSING_FIELD),
        ("tvoc_ppb", Reason.OUT_OF_RANGE),
        ("eco2_ppm", Reason.WRONG_TYPE),
        ("pm1_0_ugm3", Reason.NOT_FINITE),
        ("sensor_id", Reason.BAD_SENSOR_ID),
    ]

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
    TIMESTAMP: [None, "", "soon", "2024-01-01T00:00:00", "2024-13-01T00:00:00Z", True, [1], 0, 1e12, -5,
                # ISO 8601 forms that are not RFC 3339 (Python's fromisoformat takes them all)
                "2024-W18-3T12:00:00Z", "20240501T120000Z", "2024-05-01T12Z", "2024-05-01T12:00Z",
                "2024-05-01T12:00:00\x00Z", "2024-05-01\x0012:00:00Z", "2024-05-01T12:00:00+0200",
                "２０２４-05-01T12:00:00Z"],
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


# --- fuzz: adversarial Kafka values through decode + validate ---------------------------------

# JSON text fragments a hostile or broken producer can send. Built as bytes, not through a JSON
# encoder, so that they include what no encoder writes: NaN/Infinity literals, numbers beyond a
# double, lone surrogate escapes, invalid UTF-8, duplicate keys.
_ODD_TOKENS = st.sampled_from([
    b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"-0.0", b"-0", b"1e308", b"-1e308", b"5e-324",
    b"1" + b"0" * 400, b"-" + b"9" * 30, b"18446744073709551616", b"null", b"true", b"false", b"[]", b"{}",
    b'"\\ud800"', b'"\\udfff\\ud800"', b'"\\u0000"', b'"\xff"', b'"\xc3\x28"', b'"\xe2\x80\xae"', b'"\xf0\x9f\x94\xa5"',
    b'"NaN"', b'"20.5"', b'""', b"01", b"1.", b".5", b"+1", b"0x10",
])
_numbers_text = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(orjson.dumps),
    st.integers(-(10**40), 10**40).map(lambda i: str(i).encode()),
)
_strings_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12).map(orjson.dumps)
_scalars_text = st.one_of(_ODD_TOKENS, _numbers_text, _strings_text)
_keys_text = st.one_of(
    st.sampled_from([*ALIASES, SENSOR_ID, TIMESTAMP, "UTC", "CNT", "", "\x00"]).map(orjson.dumps),
    _strings_text,
    st.sampled_from([b'"temperatur\\u0065_c"', b'"\\ud800"', b'"\xff"']),
)
_json_text = st.recursive(_scalars_text, lambda inner: st.one_of(
    st.lists(inner, max_size=4).map(lambda xs: b"[" + b",".join(xs) + b"]"),
    st.lists(st.tuples(_keys_text, inner), max_size=4).map(
        lambda kvs: b"{" + b",".join(k + b":" + v for k, v in kvs) + b"}"),
), max_leaves=10)


@st.composite
def _mangled_readings(draw) -> bytes:
    """A valid reading's members, some values replaced, some keys added or repeated, maybe byte-damaged."""
    members = [[orjson.dumps(k), orjson.dumps(v)] for k, v in VALID.items()]
    # Few changes per reading, so that many stay close to valid and the accepted side is exercised too.
    for k in draw(st.lists(st.integers(0, len(members) - 1), max_size=2, unique=True)):
        members[k][1] = draw(st.one_of(_numbers_text, _json_text))
    members += draw(st.lists(st.tuples(_keys_text, _json_text).map(list), max_size=2))
    if draw(st.integers(0, 3)) == 0:  # the same key again, possibly with another value
        members.append([draw(st.sampled_from(members))[0], draw(st.one_of(_numbers_text, _json_text))])
    if draw(st.integers(0, 9)) == 0:
        del members[draw(st.integers(0, len(members) - 1))]
    raw = b"{" + b",".join(k + b":" + v for k, v in members) + b"}"
    if draw(st.integers(0, 4)) == 0:
        damage = draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1, max_size=3))
        buf = bytearray(raw)
        for pos, byte in damage:
            buf[pos] = byte
        raw = bytes(buf)
    return raw


_payloads = st.one_of(
    st.none(),  # a tombstone
    st.binary(max_size=300),
    _json_text,
    _mangled_readings(),
    st.integers(1, 12_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 12_000).map(lambda depth: b'{"sensor_id":' + b"[" * depth + b"]" * depth + b"}"),
    st.integers(MAX_MESSAGE_BYTES - 50, MAX_MESSAGE_BYTES + 50).map(
        lambda n: orjson.dumps(VALID) + b" " * (n - len(orjson.dumps(VALID)))),
)

_FIELDS_OF_PROBLEMS = {None, SENSOR_ID, TIMESTAMP, *MEASUREMENTS}
_LOWS = [f.low for f in FIELDS]
_HIGHS = [f.high for f in FIELDS]


def assert_rejection_contract(raws: list[bytes | None], batch: ValidatedBatch) -> None:
    """What every decoded-and-validated batch must satisfy, whatever the input bytes were."""
    accepted = batch.index.tolist()
    # Every message is accepted or rejected, never both, never neither; order is kept.
    assert accepted == sorted(accepted)
    assert set(accepted).isdisjoint(batch.rejected)
    assert set(accepted) | set(batch.rejected) == set(range(len(raws)))
    # Every rejection carries at least one problem, each with a documented reason and a known field,
    # and what the worker writes to the DLQ headers from them can be encoded.
    for problems in batch.rejected.values():
        assert problems
        for p in problems:
            assert p.reason in Reason.ALL and p.field in _FIELDS_OF_PROBLEMS and p.detail
        orjson.dumps([p.as_dict() for p in problems])
        "; ".join(f"{p.field or 'message'}: {p.detail}" for p in problems)[:1000].encode()
    # Accepted readings are complete, finite and in range, with a valid identity.
    assert batch.values.shape == (len(accepted), len(MEASUREMENTS))
    for row, sensor_id, stamp in zip(batch.values.tolist(), batch.sensor_ids, batch.timestamps.tolist(),
                                     strict=True):
        assert all(math.isfinite(v) and lo <= v <= hi for v, lo, hi in zip(row, _LOWS, _HIGHS, strict=True)), row
        assert isinstance(sensor_id, str) and sensor_id.isascii() and 0 < len(sensor_id) <= 128
        assert math.isfinite(stamp) and MIN_EPOCH_SECONDS <= stamp <= MAX_EPOCH_SECONDS


def test_fuzz_adversarial_kafka_values(request, reliability_record):
    """Batches of adversarial values through what a worker runs on every poll: never raises, keeps the contract."""
    messages = accepted = 0
    reasons: collections.Counter[str] = collections.Counter()

    # 300 batches in CI (about 3 s here), 5,000 with --full.
    @settings(max_examples=5_000 if request.config.getoption("--full") else 300, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(_payloads, min_size=1, max_size=8))
    def fuzz(raws: list[bytes | None]) -> None:
        nonlocal messages, accepted
        batch = validate_messages(raws)  # must not raise, whatever the bytes
        assert_rejection_contract(raws, batch)
        # One message at a time gives the same verdicts: a neighbour never changes a reading's fate.
        for k, raw in enumerate(raws):
            alone = validate_messages([raw])
            assert (0 in alone.rejected) == (k in batch.rejected)
            if k in batch.rejected:
                assert {p.reason for p in alone.rejected[0]} == {p.reason for p in batch.rejected[k]}
        messages += len(raws)
        accepted += len(batch)
        reasons.update(r for problems in batch.rejected.values() for r in {p.reason for p in problems})

    fuzz()
    assert accepted > 0 and len(reasons) >= 6, (accepted, reasons)  # both sides were exercised
    reliability_record("kafka_validation_fuzz", messages=messages, accepted=accepted,
                       rejected_by_reason=dict(sorted(reasons.items())))


def test_seeded_random_sample_keeps_the_contract():
    raws = random_payloads(seed=2026, n=500)
    batch = validate_messages(raws)
    assert_rejection_contract(raws, batch)
    # The sample is a mix: some of it valid, most of it not, over many reasons.
    assert 0 < len(batch) < len(raws) / 2
    assert len({p.reason for problems in batch.rejected.values() for p in problems}) >= 6
