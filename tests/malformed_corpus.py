"""Adversarial readings as they arrive on the topic: malformed ones, each with the reason it must be
rejected for, odd ones that are valid and must be accepted, and a seeded random sample of both.

Used by the ingest tests (every case through :func:`ingest.validation.validate_messages`)
and by the stream tests (every case through Kafka to the dead-letter topic or the lake).
Each malformed case is wrong in exactly one way, so its rejection has exactly one reason.

JSON has no NaN or Infinity: ``NaN``, ``Infinity`` and ``1e999`` are not JSON
and are rejected by the decoder (``not_json``); ``not_finite`` is what the
HTTP API and the CSV loader report for a NaN that arrives in a decoded value.
Neither has JSON a meaning for duplicate keys (RFC 8259: "names SHOULD be unique"); the
decoder keeps the last value, as Python's ``json``, JavaScript and most parsers do, and
that value is validated like any other (see :data:`ODD_BUT_VALID`).

>>> len(CASES) >= 20, {c.reason for c in CASES} >= {"not_json", "not_object", "too_large"}
(True, True)
>>> from ingest.validation import validate_messages
>>> batch = validate_messages([c.raw for c in CASES])
>>> len(batch), [c.name for k, c in enumerate(CASES) if {p.reason for p in batch.rejected[k]} != {c.reason}]
(0, [])
>>> batch = validate_messages([c.raw for c in ODD_BUT_VALID])
>>> batch.rejected, batch.sensor_ids == [c.sensor_id for c in ODD_BUT_VALID]
({}, True)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

from ingest.schema import MAX_MESSAGE_BYTES, MAX_SENSOR_ID_LENGTH, Reason


@dataclass(frozen=True)
class Malformed:
    """One bad message: its raw bytes, the reason and the field (None: the whole message) it must fail on."""

    name: str
    raw: bytes
    reason: str
    field: str | None


VALID: dict[str, Any] = {
    "sensor_id": "corpus-1", "timestamp": 1_654_733_331.0,
    "temperature_c": 20.5, "humidity_pct": 57.4, "tvoc_ppb": 12.0, "eco2_ppm": 400.0,
    "raw_h2_ticks": 12_306.0, "raw_ethanol_ticks": 18_520.0, "pressure_hpa": 939.7,
    "pm1_0_ugm3": 0.9, "pm2_5_ugm3": 1.1, "nc0_5_per_cm3": 6.2, "nc1_0_per_cm3": 1.0, "nc2_5_per_cm3": 0.03,
}


def _with(**changes: Any) -> bytes:
    return orjson.dumps(VALID | changes)


def _without(name: str) -> bytes:
    return orjson.dumps({k: v for k, v in VALID.items() if k != name})


def _replace_raw(name: str, token: bytes) -> bytes:
    """The valid reading with one value's JSON text replaced by ``token`` (which may not be JSON)."""
    text = _with(**{name: 123456.0})
    return text.replace(b"123456.0", token, 1)


def _duplicate(name: str, token: bytes, **changes: Any) -> bytes:
    """The valid reading (with ``changes``) and a second ``name`` key with the JSON text ``token`` at the end."""
    return _with(**changes)[:-1] + b',"' + name.encode() + b'":' + token + b"}"


# Fixed random bytes (not JSON: they start with a byte no JSON text starts with).
_RANDOM_BYTES = b"\x9c" + random.Random(7).randbytes(255)


CASES: tuple[Malformed, ...] = (
    Malformed("not JSON at all", b"temperature=20.5", Reason.NOT_JSON, None),
    Malformed("empty message", b"", Reason.NOT_JSON, None),
    Malformed("truncated JSON", _with()[:-10], Reason.NOT_JSON, None),
    Malformed("invalid UTF-8", _with(sensor_id="corpus-1").replace(b"corpus-1", b"corpus-\xff"), Reason.NOT_JSON,
              None),
    Malformed("UTF-8 byte order mark", b"\xef\xbb\xbf" + _with(), Reason.NOT_JSON, None),
    Malformed("NaN literal", _replace_raw("tvoc_ppb", b"NaN"), Reason.NOT_JSON, None),
    Malformed("Infinity literal", _replace_raw("pm2_5_ugm3", b"Infinity"), Reason.NOT_JSON, None),
    Malformed("number overflowing a double", _replace_raw("eco2_ppm", b"1e999"), Reason.NOT_JSON, None),
    Malformed("deeply nested JSON", b"[" * 5_000 + b"]" * 5_000, Reason.NOT_JSON, None),
    Malformed("JSON array of readings", orjson.dumps([VALID]), Reason.NOT_OBJECT, None),
    Malformed("JSON string", orjson.dumps(orjson.dumps(VALID).decode()), Reason.NOT_OBJECT, None),
    Malformed("JSON number", b"20.5", Reason.NOT_OBJECT, None),
    Malformed("JSON null", b"null", Reason.NOT_OBJECT, None),
    Malformed("huge message", _with(note="x" * MAX_MESSAGE_BYTES), Reason.TOO_LARGE, None),
    Malformed("missing measurement", _without("tvoc_ppb"), Reason.MISSING_FIELD, "tvoc_ppb"),
    Malformed("null measurement", _with(humidity_pct=None), Reason.MISSING_FIELD, "humidity_pct"),
    Malformed("boolean measurement", _with(eco2_ppm=True), Reason.WRONG_TYPE, "eco2_ppm"),
    Malformed("numeric string", _with(temperature_c="20.5"), Reason.WRONG_TYPE, "temperature_c"),
    Malformed("object as a measurement", _with(pm1_0_ugm3={"value": 0.9}), Reason.WRONG_TYPE, "pm1_0_ugm3"),
    Malformed("list as a measurement", _with(nc0_5_per_cm3=[6.2]), Reason.WRONG_TYPE, "nc0_5_per_cm3"),
    Malformed("humidity above 100 %", _with(humidity_pct=140.0), Reason.OUT_OF_RANGE, "humidity_pct"),
    Malformed("temperature below -40 C", _with(temperature_c=-60.0), Reason.OUT_OF_RANGE, "temperature_c"),
    Malformed("eCO2 below its 400 ppm floor", _with(eco2_ppm=120.0), Reason.OUT_OF_RANGE, "eco2_ppm"),
    Malformed("negative particle count", _with(nc2_5_per_cm3=-1.0), Reason.OUT_OF_RANGE, "nc2_5_per_cm3"),
    Malformed("pressure above 1100 hPa", _with(pressure_hpa=1_500.0), Reason.OUT_OF_RANGE, "pressure_hpa"),
    Malformed("raw ticks above 16 bits", _with(raw_h2_ticks=70_000), Reason.OUT_OF_RANGE, "raw_h2_ticks"),
    Malformed("huge integer", _replace_raw("tvoc_ppb", b"1" + b"0" * 40), Reason.OUT_OF_RANGE, "tvoc_ppb"),
    Malformed("timestamp as free text", _with(timestamp="yesterday"), Reason.BAD_TIMESTAMP, "timestamp"),
    Malformed("naive timestamp", _with(timestamp="2024-05-01T12:00:00"), Reason.BAD_TIMESTAMP, "timestamp"),
    Malformed("timestamp in milliseconds", _with(timestamp=1_654_733_331_000), Reason.BAD_TIMESTAMP, "timestamp"),
    Malformed("timestamp before 2000", _with(timestamp=0), Reason.BAD_TIMESTAMP, "timestamp"),
    Malformed("boolean timestamp", _with(timestamp=True), Reason.BAD_TIMESTAMP, "timestamp"),
    Malformed("impossible date", _with(timestamp="2024-02-30T00:00:00Z"), Reason.BAD_TIMESTAMP, "timestamp"),
    Malformed("missing timestamp", _without("timestamp"), Reason.BAD_TIMESTAMP, "timestamp"),
    Malformed("missing sensor id", _without("sensor_id"), Reason.BAD_SENSOR_ID, "sensor_id"),
    Malformed("empty sensor id", _with(sensor_id=""), Reason.BAD_SENSOR_ID, "sensor_id"),
    Malformed("numeric sensor id", _with(sensor_id=17), Reason.BAD_SENSOR_ID, "sensor_id"),
    Malformed("sensor id with a slash and spaces", _with(sensor_id="floor 2/room 5"), Reason.BAD_SENSOR_ID,
              "sensor_id"),
    Malformed("sensor id too long", _with(sensor_id="s" * (MAX_SENSOR_ID_LENGTH + 1)), Reason.BAD_SENSOR_ID,
              "sensor_id"),
    Malformed("conflicting spellings of one field", _with(Temperature=35.0), Reason.CONFLICTING_ALIASES,
              "temperature_c"),
    # Adversarial: random bytes, deep and huge JSON, odd unicode, extreme numbers, duplicate keys.
    Malformed("random bytes", _RANDOM_BYTES, Reason.NOT_JSON, None),
    Malformed("10,000 nested arrays inside a reading", _replace_raw("pm1_0_ugm3", b"[" * 10_000 + b"]" * 10_000),
              Reason.NOT_JSON, None),
    Malformed("10,000 nested objects", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, Reason.NOT_JSON, None),
    Malformed("huge array of readings", orjson.dumps([VALID] * (MAX_MESSAGE_BYTES // 200)), Reason.TOO_LARGE, None),
    Malformed("huge object of many keys", _with(**{f"k{i}": i for i in range(MAX_MESSAGE_BYTES // 8)}),
              Reason.TOO_LARGE, None),
    Malformed("lone surrogate escape", _with(sensor_id="corpus-1").replace(b"corpus-1", b"corpus-\\ud800"),
              Reason.NOT_JSON, None),
    Malformed("invalid UTF-8 in a key", _with(pm2_5_ugm3=1.1).replace(b'"pm2_5_ugm3"', b'"pm2_5\xc3\x28ugm3"'),
              Reason.NOT_JSON, None),
    Malformed("-Infinity literal", _replace_raw("humidity_pct", b"-Infinity"), Reason.NOT_JSON, None),
    Malformed("10**400 as an integer", _replace_raw("raw_h2_ticks", b"1" + b"0" * 400), Reason.NOT_JSON, None),
    Malformed("1e308", _with(tvoc_ppb=1e308), Reason.OUT_OF_RANGE, "tvoc_ppb"),
    Malformed("-1e308", _with(temperature_c=-1e308), Reason.OUT_OF_RANGE, "temperature_c"),
    Malformed("smallest subnormal below a floor of 400", _with(eco2_ppm=5e-324), Reason.OUT_OF_RANGE, "eco2_ppm"),
    Malformed("integer beyond 64 bits", _replace_raw("nc1_0_per_cm3", b"18446744073709551616"), Reason.OUT_OF_RANGE,
              "nc1_0_per_cm3"),
    Malformed("NaN as a string", _with(pm2_5_ugm3="NaN"), Reason.WRONG_TYPE, "pm2_5_ugm3"),
    Malformed("number with a NUL in a string", _with(pressure_hpa="939\u0000.7"), Reason.WRONG_TYPE, "pressure_hpa"),
    Malformed("empty object as a measurement", _with(nc2_5_per_cm3={}), Reason.WRONG_TYPE, "nc2_5_per_cm3"),
    Malformed("duplicate key, the last one out of range", _duplicate("humidity_pct", b"140.0"), Reason.OUT_OF_RANGE,
              "humidity_pct"),
    Malformed("duplicate key, the last one a string", _duplicate("tvoc_ppb", b'"12"'), Reason.WRONG_TYPE, "tvoc_ppb"),
    Malformed("duplicate key, the last one null", _duplicate("eco2_ppm", b"null"), Reason.MISSING_FIELD, "eco2_ppm"),
    Malformed("NUL in the sensor id", _with(sensor_id="corpus\u00001"), Reason.BAD_SENSOR_ID, "sensor_id"),
    Malformed("right-to-left override in the sensor id", _with(sensor_id="corpus-\u202e1-"), Reason.BAD_SENSOR_ID,
              "sensor_id"),
    Malformed("emoji sensor id", _with(sensor_id="\U0001f525-kitchen"), Reason.BAD_SENSOR_ID, "sensor_id"),
    Malformed("zero-width space in the sensor id", _with(sensor_id="corpus\u200b-1"), Reason.BAD_SENSOR_ID,
              "sensor_id"),
    Malformed("fullwidth digits in the sensor id", _with(sensor_id="corpus-\uff11"), Reason.BAD_SENSOR_ID,
              "sensor_id"),
    Malformed("sensor id with a trailing newline", _with(sensor_id="corpus-1\n"), Reason.BAD_SENSOR_ID, "sensor_id"),
    Malformed("sensor id as an object", _with(sensor_id={"id": "corpus-1"}), Reason.BAD_SENSOR_ID, "sensor_id"),
    Malformed("timestamp 1e308", _with(timestamp=1e308), Reason.BAD_TIMESTAMP, "timestamp"),
    Malformed("timestamp -0.0", _with(timestamp=-0.0), Reason.BAD_TIMESTAMP, "timestamp"),
    Malformed("timestamp with a NUL", _with(timestamp="2024-05-01T12:00:00\u0000Z"), Reason.BAD_TIMESTAMP,
              "timestamp"),
    Malformed("timestamp year 10000", _with(timestamp="10000-01-01T00:00:00Z"), Reason.BAD_TIMESTAMP, "timestamp"),
)


@dataclass(frozen=True)
class Odd:
    """A message that looks adversarial but is a valid reading and must be accepted as ``sensor_id``."""

    name: str
    raw: bytes
    sensor_id: str


ODD_BUT_VALID: tuple[Odd, ...] = (
    Odd("negative zero", _with(sensor_id="odd-neg-zero", pm1_0_ugm3=-0.0, nc0_5_per_cm3=-0.0), "odd-neg-zero"),
    Odd("values exactly at the range edges", _with(sensor_id="odd-edges", temperature_c=-40.0, humidity_pct=100,
                                                   eco2_ppm=400, raw_h2_ticks=65_535, pressure_hpa=300.0),
        "odd-edges"),
    Odd("integers and exponents", _replace_raw("temperature_c", b"2.05E1").replace(b'"corpus-1"', b'"odd-exp"'),
        "odd-exp"),
    Odd("duplicate key, the last one valid", _duplicate("temperature_c", b"21.5", sensor_id="odd-dup"), "odd-dup"),
    Odd("unicode escapes in key names", _with(sensor_id="odd-escaped").replace(b'"temperature_c"',
                                                                               b'"temperatur\\u0065_c"'),
        "odd-escaped"),
    Odd("unknown keys with NUL, emoji and right-to-left marks",
        _with(sensor_id="odd-keys", **{"note\u0000": "\U0001f525", "\u202eetouq": "\u200f", "": None}), "odd-keys"),
    Odd("whitespace around and inside", b" \n\t" + orjson.dumps(VALID | {"sensor_id": "odd-space"},
                                                                  option=orjson.OPT_INDENT_2) + b"\r\n ",
        "odd-space"),
    Odd("every allowed sensor id character, at the maximum length",
        _with(sensor_id=("Az09._:-" * MAX_SENSOR_ID_LENGTH)[:MAX_SENSOR_ID_LENGTH]),
        ("Az09._:-" * MAX_SENSOR_ID_LENGTH)[:MAX_SENSOR_ID_LENGTH]),
    Odd("RFC 3339 timestamp with an offset and nanoseconds", _with(sensor_id="odd-time",
                                                                   timestamp="2024-05-01T14:00:00.123456+02:00"),
        "odd-time"),
    Odd("seed and Kaggle spellings that agree", _with(sensor_id="odd-alias", Temperature=20.5,
                                                      **{"Temperature[C]": 20.5}), "odd-alias"),
)


def random_payloads(seed: int, n: int) -> list[bytes | None]:
    """A reproducible sample of ``n`` adversarial payloads: random bytes and valid readings mangled at random.

    Their expected outcome is whatever :func:`ingest.validation.validate_messages` says (the
    property tests prove that path); the stream tests check that the stream agrees with it.
    """
    rng = random.Random(seed)
    wild: list[Any] = [None, True, "", "x" * 50, -0.0, 1e308, -1e308, 5e-324, 2**63, -(2**63), 1e30, [], {},
                       [1.0], "\u0000", "\U0001f525", "\u202e", "NaN", 0, -1, 65_536, 1_654_733_331]
    # What no JSON encoder writes: literals beyond JSON, numbers beyond a double, a lone surrogate.
    wild_text = [b"NaN", b"-Infinity", b"1e999", b"1" + b"0" * 400, b"-" + b"9" * 30, b'"\\udc00"']
    fields = list(VALID)
    out: list[bytes | None] = []
    for _ in range(n):
        kind = rng.randrange(7)
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(0, 200)))
        elif kind == 1:  # one field replaced by a wild value, or dropped
            doc = dict(VALID, sensor_id=f"rnd-{rng.randrange(100)}")
            name = rng.choice(fields)
            if rng.random() < 0.2:
                del doc[name]
            elif rng.random() < 0.2:
                doc[name] = 123456.0
                out.append(orjson.dumps(doc).replace(b"123456.0", rng.choice(wild_text), 1))
                continue
            else:
                doc[name] = rng.choice(wild)
            out.append(orjson.dumps(doc))
        elif kind == 2:  # a valid reading with a few random bytes overwritten
            raw = bytearray(_with(sensor_id=f"rnd-{rng.randrange(100)}"))
            for _ in range(rng.randrange(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            out.append(bytes(raw))
        elif kind == 3:  # truncated
            raw = _with(sensor_id=f"rnd-{rng.randrange(100)}")
            out.append(raw[: rng.randrange(len(raw))])
        elif kind == 4:  # nested deeper than the decoder allows, or just within it
            depth = rng.choice([10, 500, 1_000, 2_000, 20_000])
            out.append(_replace_raw("nc2_5_per_cm3", b"[" * depth + b"]" * depth))
        elif kind == 5:  # a wild value under a duplicate key
            token = orjson.dumps(rng.choice(wild))
            out.append(_duplicate(rng.choice(fields), token, sensor_id=f"rnd-{rng.randrange(100)}"))
        else:  # a valid reading of a random sensor: valid traffic inside the noise
            out.append(_with(sensor_id=f"rnd-{rng.randrange(100)}", temperature_c=round(rng.uniform(-40, 125), 3)))
    return out


def pairs() -> list[tuple[bytes, str]]:
    """The corpus as ``(raw_bytes, expected_reason)`` pairs."""
    return [(case.raw, case.reason) for case in CASES]
