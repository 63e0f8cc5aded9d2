"""Request bodies: the size limit, JSON decoding and the validation of readings.

Parsing is deliberate rather than automatic: bodies are decoded with orjson and
every reading goes through :func:`ingest.validation.validate_records`, the one
validation of the project, so a missing, null, mistyped, non-finite or
out-of-range value is a 422 naming the field (never a zero), malformed JSON is a
400 and an oversized body a 413. Every refusal is counted by its reason.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import numpy as np
import orjson
from fastapi import Request

from ingest.schema import TIMESTAMP, Reason
from ingest.validation import ValidatedBatch, is_naive_time, validate_records
from serve.errors import invalid_reading, request_error
from serve.metrics import ServeMetrics


async def read_json(request: Request, max_body: int, metrics: ServeMetrics) -> Any:
    """The decoded body; 413 beyond ``max_body`` bytes (declared or sent), 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    size = int(declared) if declared is not None and declared.isdigit() else None
    body = b""
    if size is None or size <= max_body:
        body = await request.body()
        size = len(body)
    if size > max_body:
        metrics.rejected([Reason.TOO_LARGE])
        raise request_error(413, None, Reason.TOO_LARGE, f"{size} > {max_body} bytes",
                            f"request body of {size} bytes exceeds the limit of {max_body} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        # Python's json writes NaN, Infinity and 1e999 by default; orjson refuses them. Decode
        # those with json so validation can answer 422 not_finite, naming the field.
        with contextlib.suppress(ValueError, RecursionError):
            return json.loads(body)
        metrics.rejected([Reason.NOT_JSON])
        raise request_error(400, None, Reason.NOT_JSON, str(err)[:200], f"malformed JSON: {err}") from None


def validate_one(doc: Any, metrics: ServeMetrics) -> tuple[np.ndarray, str | None]:
    """One reading's measurements and sensor id, or a 422 naming every problem."""
    batch = validate_records([doc], require_identity=False)
    if batch.rejected:
        problems = batch.rejected[0]
        metrics.rejected([p.reason for p in problems])
        raise invalid_reading(problems)
    return batch.values[0], batch.sensor_ids[0]


def readings_of_batch(doc: Any, max_rows: int, metrics: ServeMetrics) -> list[Any]:
    """The list of readings of a batch body: ``{"data": [...]}`` or a bare list; 422/413 otherwise."""
    if isinstance(doc, dict):
        if "data" not in doc:
            metrics.rejected([Reason.MISSING_FIELD])
            raise request_error(422, "data", Reason.MISSING_FIELD, "missing",
                                "data: missing_field (send {\"data\": [readings]} or a JSON list)")
        doc = doc["data"]
    if not isinstance(doc, list):
        metrics.rejected([Reason.WRONG_TYPE])
        raise request_error(422, "data", Reason.WRONG_TYPE, "not a list",
                            f"data: wrong_type (a JSON {type(doc).__name__}, not a list of readings)")
    if len(doc) > max_rows:
        metrics.rejected([Reason.TOO_LARGE])
        raise request_error(413, "data", Reason.TOO_LARGE, f"{len(doc)} > {max_rows} readings",
                            f"data: {len(doc)} readings exceed the limit of {max_rows} per request; split the batch")
    return doc


def validate_batch(readings: list[Any], metrics: ServeMetrics) -> ValidatedBatch:
    batch = validate_records(readings, require_identity=False)
    for problems in batch.rejected.values():
        metrics.rejected([p.reason for p in problems])
    return batch


def without_naive_time(doc: Any) -> tuple[Any, list[str]]:
    """A reading whose ``timestamp`` has no UTC offset, without it, and the warning that says so.

    Prediction does not use the time, and the original project's producers send local
    times like ``2026-12-02 05:20:51``: the API accepts such a reading and says what it
    ignored. The stream keeps refusing them (a reading's zone would be a guess there).
    """
    if isinstance(doc, dict) and is_naive_time(doc.get(TIMESTAMP)):
        warning = (f"timestamp {doc[TIMESTAMP]!r} has no UTC offset and was ignored (prediction does not use "
                   "it; the stream refuses such readings: send RFC 3339 with Z or +HH:MM, or epoch seconds)")
        return {k: v for k, v in doc.items() if k != TIMESTAMP}, [warning]
    return doc, []
