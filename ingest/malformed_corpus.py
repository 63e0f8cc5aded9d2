"""A corpus of malformed readings as they arrive on the topic, each with the reason it must be rejected for.

Used by the ingest tests (every case through :func:`ingest.validation.validate_messages`)
and by the stream tests (every case through Kafka to the dead-letter topic).
Each case is wrong in exactly one way, so its rejection has exactly one reason.

JSON has no NaN or Infinity: ``NaN``, ``Infinity`` and ``1e999`` are not JSON
and are rejected by the decoder (``not_json``); ``not_finite`` is what the
HTTP API and the CSV loader report for a NaN that arrives in a decoded value.

>>> len(CASES) >= 20, {c.reason for c in CASES} >= {"not_json", "not_object", "too_large"}
(True, True)
>>> from ingest.validation import validate_messages
>>> batch = validate_messages([c.raw for c in CASES])
>>> len(batch), [c.name for k, c in enumerate(CASES) if {p.reason for p in batch.rejected[k]} != {c.reason}]
(0, [])
"""

from __future__ import annotations

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
)


def pairs() -> list[tuple[bytes, str]]:
    """The corpus as ``(raw_bytes, expected_reason)`` pairs."""
    return [(case.raw, case.reason) for case in CASES]
