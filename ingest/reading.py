"""A validated reading as a value, and its wire form on the ``smoke_sensor_data`` topic.

>>> r = Reading("s-1", 1654733331.0, dict.fromkeys(MEASUREMENTS, 500.0) | {"temperature_c": 21.5,
...     "humidity_pct": 48.0, "pressure_hpa": 938.6})
>>> Reading.from_message(r.to_message()) == r
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from ingest.schema import MEASUREMENTS, SENSOR_ID, TIMESTAMP
from ingest.validation import ValidatedBatch, validate_messages


class InvalidReading(ValueError):
    """A message that failed validation; ``problems`` says why."""

    def __init__(self, problems):
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.reason} ({p.detail})" for p in problems))


@dataclass(frozen=True)
class Reading:
    sensor_id: str
    timestamp: float  # epoch seconds, UTC
    values: dict[str, float]  # canonical measurement name -> value

    def to_message(self) -> bytes:
        """JSON value for the topic; the key is ``sensor_id.encode()``."""
        return encode_message(self.sensor_id, self.timestamp, self.values)

    @classmethod
    def from_message(cls, raw: bytes) -> Reading:
        batch = validate_messages([raw])
        if batch.rejected:
            raise InvalidReading(batch.rejected[0])
        return next(iter(readings_of(batch)))


def encode_message(sensor_id: object, timestamp: object, values: Mapping[str, object]) -> bytes:
    """The wire form of a reading, for producers that hold readings as columns, not :class:`Reading`.

    Takes what it is given: replaying a file with a bad cell sends that cell for
    the stream to reject, so nothing here checks the values.

    >>> encode_message("s-1", 1654733331.5, {"temperature_c": 21.5})
    b'{"sensor_id":"s-1","timestamp":1654733331.5,"temperature_c":21.5}'
    """
    return orjson.dumps({SENSOR_ID: sensor_id, TIMESTAMP: timestamp, **values})


def encode_batch(sensor_ids: Sequence[str], timestamps: Sequence[float], rows: Sequence[Sequence[float]]
                 ) -> list[bytes]:
    """Wire forms of many readings, byte for byte those of :func:`encode_message`, made in one go.

    For producers of large volumes (the simulator): one JSON document for the
    whole batch, cut into one message per reading, which costs about half as
    much per reading as a call per reading. Falls back to
    :func:`encode_message` per reading if a sensor id could confuse the cutting.

    >>> messages = encode_batch(["a", "b"], [1.5, 2.0], [[20.5] * 12, [21.0] * 12])
    >>> messages[1] == encode_message("b", 2.0, dict.fromkeys(MEASUREMENTS, 21.0))
    True
    """
    docs = [{SENSOR_ID: sensor, TIMESTAMP: stamp, **dict(zip(MEASUREMENTS, row, strict=True))}
            for sensor, stamp, row in zip(sensor_ids, timestamps, rows, strict=True)]
    if not docs:
        return []
    whole = orjson.dumps(docs)  # [{...},{...},...]
    # Readings are cut where one object ends and the next begins: "},{" cannot occur inside one,
    # as values are numbers; an id holding it makes the count come out wrong and we fall back.
    text = np.frombuffer(whole, dtype=np.uint8)
    cuts = np.flatnonzero((text[1:-3] == ord("}")) & (text[2:-2] == ord(",")) & (text[3:-1] == ord("{"))) + 2
    if len(cuts) != len(docs) - 1:
        return [orjson.dumps(doc) for doc in docs]
    starts = [1, *(cuts + 1).tolist()]
    ends = [*cuts.tolist(), len(whole) - 1]
    return [whole[start:end] for start, end in zip(starts, ends, strict=True)]


def readings_of(batch: ValidatedBatch):
    """The accepted readings of a batch as :class:`Reading` values (for tests and small jobs)."""
    for k in range(len(batch)):
        yield Reading(
            batch.sensor_ids[k],
            float(batch.timestamps[k]),
            dict(zip(MEASUREMENTS, map(float, batch.values[k]), strict=True)),
        )
