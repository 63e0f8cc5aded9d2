"""Silences (maintenance windows): list them, create one, delete one.

A silenced incident is still recorded and shown; it is not delivered. A silence that
matches nothing (no matcher) or ends before it starts is a 422 naming the field, and
nothing is written.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from alerting.silences import InvalidSilence, SilenceSpec
from serve.errors import json_response, request_error
from serve.operator import schemas
from serve.operator.routes import INVALID, attrs, store_of
from serve.schemas import ErrorResponse

router = APIRouter(tags=["silences"])

def silence_out(silence: Any, now: float) -> schemas.SilenceOut:
    doc = attrs(silence)
    doc.setdefault("active", silence.starts_at <= now < silence.ends_at)
    return schemas.SilenceOut.model_validate(doc)


def silence_spec(body: schemas.SilenceRequest, now: float) -> SilenceSpec:
    """The store's spec of a request, or a 422 naming the field that makes it invalid."""
    starts = body.starts_at if body.starts_at is not None else now
    if (body.ends_at is None) == (body.duration_s is None):
        raise request_error(422, "ends_at", "missing" if body.ends_at is None else "conflict",
                            "give either ends_at or duration_s")
    ends = body.ends_at if body.ends_at is not None else starts + body.duration_s
    try:
        spec = SilenceSpec(sensor_id=body.sensor_id, zone=body.zone, site=body.site, kind=body.kind,
                           starts_at=starts, ends_at=ends, created_by=body.created_by, comment=body.comment)
    except InvalidSilence as err:
        raise request_error(422, err.field, "invalid", err.reason) from None
    if ends <= now:
        # Valid for the store, but it would silence nothing: almost certainly a typing mistake.
        raise request_error(422, "ends_at", "in_the_past", f"{ends} has passed (now {now:.0f})")
    return spec


@router.get("/silences", response_model=schemas.SilenceList)
def list_silences(request: Request,
                  active: Annotated[bool, Query(description="only the silences in force now")] = False) -> Response:
    now = time.time()
    found = store_of(request).silences(active_at=now if active else None)
    return json_response(schemas.SilenceList(silences=[silence_out(s, now) for s in found]))


@router.post("/silences", response_model=schemas.SilenceOut, status_code=201, responses=INVALID)
def create_silence(request: Request, body: schemas.SilenceRequest) -> Response:
    now = time.time()
    silence = store_of(request).add_silence(silence_spec(body, now))
    return json_response(silence_out(silence, now), status=201)


@router.delete("/silences/{silence_id}", response_model=schemas.Deleted,
               responses={404: {"model": ErrorResponse, "description": "no silence with this id"}})
def delete_silence(request: Request, silence_id: int = Path(ge=1)) -> Response:
    if not store_of(request).delete_silence(silence_id):
        raise request_error(404, "silence_id", "unknown", f"no silence {silence_id}")
    return json_response(schemas.Deleted(deleted=str(silence_id)))
