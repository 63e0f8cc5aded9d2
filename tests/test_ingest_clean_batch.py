"""The clean-batch paths of validation accept exactly what the careful path accepts.

``validate_records`` first tries ``_validate_clean_batch`` (column by column, all or
nothing) and falls back to ``_validate_each``. ``validate_messages`` decodes with msgspec
straight from the bytes and sends only the messages that fail a check the careful way.
Every batch here is compared on the fast path and on the careful one.
"""

from __future__ import annotations

import copy

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ingest.validation
from ingest.settings import SimulatorSettings
from ingest.simulator import FleetSimulator
from ingest.validation import (
    ValidatedBatch,
    _validate_clean_batch,
    _validate_each,
    decode_messages,
    validate_messages,
    validate_records,
)


def clean_records(n: int = 40) -> list[dict]:
    sim = FleetSimulator(SimulatorSettings(sensors=10, rate=10.0, seed=11), start_time=1_780_000_000.0)
    out: list[dict] = []
    for batch in sim.batches(batch_size=n):
        out += [orjson.loads(m) for m in batch.messages()]
        if len(out) >= n:
            return out[:n]
    return out


def assert_same(a: ValidatedBatch, b: ValidatedBatch) -> None:
    np.testing.assert_array_equal(a.index, b.index)
    assert a.sensor_ids == b.sensor_ids
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.rejected == b.rejected


def test_a_clean_batch_takes_the_column_path_and_matches_the_careful_one() -> None:
    records = clean_records()
    fast = _validate_clean_batch(records)
    assert fast is not None and len(fast) == len(records)
    assert_same(fast, _validate_each(records, True, None))
    # Timestamps as RFC 3339 text and integer measurements are clean too.
    text = [r | {"timestamp": "2026-06-01T10:00:00.5Z", "tvoc_ppb": int(r["tvoc_ppb"])} for r in records]
    fast = _validate_clean_batch(text)
    assert fast is not None
    assert_same(fast, _validate_each(text, True, None))


MUTATIONS = {
    "bool value": lambda r: r.update(temperature_c=True),
    "string value": lambda r: r.update(humidity_pct="45.0"),
    "null value": lambda r: r.update(tvoc_ppb=None),
    "missing value": lambda r: r.pop("eco2_ppm"),
    "alias beside the name": lambda r: r.update({"Temperature": r["temperature_c"] + 1}),
    "alias instead of the name": lambda r: r.update({"Humidity": r.pop("humidity_pct")}),
    "unknown extra key": lambda r: r.update(firmware="1.2"),
    "out of range": lambda r: r.update(pressure_hpa=5000.0),
    "infinity": lambda r: r.update(pm1_0_ugm3=float("inf")),
    "nan": lambda r: r.update(pm2_5_ugm3=float("nan")),
    "huge integer": lambda r: r.update(nc0_5_per_cm3=10**400),
    "bad sensor id": lambda r: r.update(sensor_id="bad id!"),
    "numeric sensor id": lambda r: r.update(sensor_id=17),
    "list sensor id": lambda r: r.update(sensor_id=["a"]),
    "missing sensor id": lambda r: r.pop("sensor_id"),
    "naive time": lambda r: r.update(timestamp="2026-06-01T10:00:00"),
    "bool time": lambda r: r.update(timestamp=False),
    "time before 2000": lambda r: r.update(timestamp=10.0),
    "huge integer time": lambda r: r.update(timestamp=10**400),
    "not an object": lambda r: r.clear(),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_one_bad_reading_sends_the_batch_to_the_careful_path(name: str) -> None:
    records = clean_records()
    bad = copy.deepcopy(records)
    MUTATIONS[name](bad[7])
    if name == "not an object":
        bad[7] = [1, 2]
    assert _validate_clean_batch(bad) is None
    assert_same(validate_records(bad), _validate_each(bad, True, None))


def test_decoding_falls_back_for_tombstones_oversized_and_broken_messages() -> None:
    raws = [orjson.dumps(r) for r in clean_records(5)]
    records, rejected = decode_messages(raws)
    assert rejected == {} and records == [orjson.loads(r) for r in raws]
    mixed = [*raws, None, b"{not json", b" " * 2_000_000]
    records, rejected = decode_messages(mixed)
    assert sorted(rejected) == [5, 6, 7] and records[5:] == [None, None, None]
    batch = validate_messages(mixed)
    assert len(batch) == 5 and sorted(batch.rejected) == [5, 6, 7]


def careful(raws: list[bytes | None]) -> ValidatedBatch:
    """The long way for messages: orjson to dicts, then every reading checked on its own."""
    records, undecodable = decode_messages(raws)
    batch = _validate_each(records, True, undecodable)
    batch.rejected.update(undecodable)
    return batch


@pytest.fixture
def careful_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many messages each call of the careful path was given."""
    calls: list[int] = []
    original = ingest.validation._validate_messages_carefully

    def spy(raws):
        calls.append(len(raws))
        return original(raws)

    monkeypatch.setattr(ingest.validation, "_validate_messages_carefully", spy)
    return calls


def test_clean_messages_stay_on_the_msgspec_path_and_match_the_careful_one(careful_calls: list[int]) -> None:
    records = clean_records()
    text = [r | {"timestamp": "2026-06-01T10:00:00.5Z", "tvoc_ppb": int(r["tvoc_ppb"])} for r in records]
    for batch in (records, text):
        raws = [orjson.dumps(r) for r in batch]
        assert_same(validate_messages(raws), careful(raws))
    assert careful_calls == []


# Byte-level changes to message 7 that JSON-to-dict decoding and msgspec might read differently.
RAW_MUTATIONS = {
    "duplicate key, the last wins": lambda raw: raw[:-1] + b',"temperature_c":21.25}',
    "escaped key": lambda raw: raw.replace(b'"humidity_pct"', b'"humidity\\u005fpct"'),
    "surrounding whitespace": lambda raw: b" \n" + raw + b"\t ",
    "integer minus zero": lambda raw: raw[:-1] + b',"tvoc_ppb":-0}',
    "underflow to zero": lambda raw: raw[:-1] + b',"pm1_0_ugm3":1e-400}',
    "overflow": lambda raw: raw[:-1] + b',"pm1_0_ugm3":1e400}',
    "long integer": lambda raw: raw[:-1] + b',"pm1_0_ugm3":' + b"9" * 60 + b"}",
    "many digits": lambda raw: raw[:-1] + b',"humidity_pct":45.00000000000000000000000000001}',
    "boolean": lambda raw: raw[:-1] + b',"tvoc_ppb":true}',
    "null": lambda raw: raw[:-1] + b',"tvoc_ppb":null}',
    "string number": lambda raw: raw[:-1] + b',"tvoc_ppb":"12"}',
    "unknown key": lambda raw: raw[:-1] + b',"firmware":"1.2"}',
    "kaggle spelling": lambda raw: raw.replace(b'"temperature_c"', b'"Temperature[C]"'),
    "lone surrogate in the id": lambda raw: raw.replace(b'"sensor_id":"', b'"sensor_id":"\\ud800'),
    "invalid utf-8 in the id": lambda raw: raw.replace(b'"sensor_id":"', b'"sensor_id":"\xff'),
    "leading zero": lambda raw: raw[:-1] + b',"tvoc_ppb":012}',
    "NaN literal": lambda raw: raw[:-1] + b',"tvoc_ppb":NaN}',
    "trailing garbage": lambda raw: raw + b"x",
    "two documents": lambda raw: raw + b"," + raw,
    "an array": lambda raw: b"[" + raw + b"]",
    "truncated": lambda raw: raw[:-5],
    "empty": lambda raw: b"",
    "tombstone": lambda raw: None,
    "oversized": lambda raw: raw[:-1] + b"," + b" " * 70_000 + b"}",
}


@pytest.mark.parametrize("name", sorted(RAW_MUTATIONS))
def test_messages_read_differently_by_no_path(name: str) -> None:
    raws = [orjson.dumps(r) for r in clean_records()]
    raws[7] = RAW_MUTATIONS[name](raws[7])
    assert_same(validate_messages(raws), careful(raws))


@pytest.mark.parametrize("positions", [(0,), (39,), (0, 5, 6, 39), tuple(range(0, 40, 2))])
def test_only_the_bad_messages_go_the_careful_way_and_the_rest_keep_their_order(
        positions: tuple[int, ...], careful_calls: list[int]) -> None:
    raws = [orjson.dumps(r) for r in clean_records()]
    # Undecodable for msgspec (the first three), decodable but failing a check (the next three),
    # and valid in a spelling only the careful path reads (the last).
    edits = ["truncated", "tombstone", "boolean", "out of range", "bad sensor id", "naive time", "kaggle spelling"]
    for k, position in enumerate(positions):
        name = edits[k % len(edits)]
        if name in MUTATIONS:
            record = orjson.loads(raws[position])
            MUTATIONS[name](record)
            raws[position] = orjson.dumps(record)
        else:
            raws[position] = RAW_MUTATIONS[name](raws[position])
    batch = validate_messages(raws)
    assert_same(batch, careful(raws))
    assert careful_calls == [len(positions)]
    assert sorted(batch.rejected) == [p for k, p in enumerate(positions) if edits[k % len(edits)] != "kaggle spelling"]
    assert len(batch) == 40 - len(batch.rejected)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzzed_messages_are_accepted_and_rejected_alike(data: st.DataObject) -> None:
    """Random byte edits of one message: the msgspec path never accepts what the careful path rejects."""
    raws = [orjson.dumps(r) for r in clean_records(8)]
    raw = bytearray(raws[3])
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw)))
        edit = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = data.draw(st.sampled_from([*(bytes([b]) for b in b'0123456789.-+eE"{}[],:\\ x\x00\xff'),
                                           b"true", b"null", b"1e400", b"-0", b'"1"', b"[]"]))
        if edit == "insert":
            raw[at:at] = piece
        elif at < len(raw):
            raw[at:at + 1] = b"" if edit == "delete" else piece
    raws[3] = bytes(raw)
    assert_same(validate_messages(raws), careful(raws))
