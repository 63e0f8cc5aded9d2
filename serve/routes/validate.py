"""``POST /validate``: would this reading be accepted, and what of it is ignored (never scores it)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ingest.schema import ALIASES, LEAKY_COLUMNS, SENSOR_ID, TIMESTAMP
from ingest.validation import validate_records
from serve import schemas
from serve.errors import field_error, json_response
from serve.parsing import read_json, without_naive_time
from serve.routes import backend_of
from serve.routes.predict import ERRORS_DOC

router = APIRouter()

_KNOWN_KEYS = frozenset(ALIASES) | {SENSOR_ID, TIMESTAMP}
_READING_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": schemas.reading_schema()}}}}


@router.post("/validate", response_model=schemas.ValidateResponse,
             responses={400: ERRORS_DOC[400], 413: ERRORS_DOC[413]}, openapi_extra=_READING_BODY)
async def validate(request: Request) -> Response:
    backend = backend_of(request)
    doc, warnings = without_naive_time(await read_json(request, backend.settings.max_body_bytes, backend.metrics))
    batch = validate_records([doc], require_identity=False)
    problems = batch.rejected.get(0, [])
    if problems:
        backend.metrics.rejected([p.reason for p in problems])
    if isinstance(doc, dict):
        for key in doc:
            if key.upper() in LEAKY_COLUMNS:
                warnings.append(f"{key!r} is ignored: it leaks the label in the Kaggle data")
            elif key not in _KNOWN_KEYS:
                warnings.append(f"unknown field {key!r} is ignored")
        if len(backend.server.slots) > 1 and doc.get(SENSOR_ID) is None:
            warnings.append("no sensor_id: the A/B variant is drawn at random instead of sticky per sensor")
    return json_response(schemas.ValidateResponse(valid=not problems, errors=[field_error(p) for p in problems],
                                                  warnings=warnings))
