"""Incidents: list and filter them, read one with its events, evidence, acknowledgements and deliveries,
acknowledge one (who, outcome, note) and resolve one.

An unknown id is 404 and nothing is written; an invalid outcome is 422 naming ``outcome``
(the request body is validated before the store is touched).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from alerting.lifecycle import InvalidTransition
from alerting.store import UnknownIncident
from alerting.time_window import parse_instant
from serve.errors import json_response, request_error
from serve.operator import schemas
from serve.operator.routes import INVALID, attrs, location_out, store_of
from serve.schemas import ErrorResponse

router = APIRouter(tags=["incidents"])

CONFLICT = {409: {"model": ErrorResponse, "description": "not allowed in the incident's state (acknowledged "
                                                          "already, resolved already, not acknowledged yet)"}}
AlertId = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="the incident's alert_id")
NOT_FOUND = {404: {"model": ErrorResponse, "description": "no incident with this alert_id"}}
State = Literal["open", "raised", "acknowledged", "cleared", "resolved"]


def incident_out(incident: Any) -> schemas.IncidentOut:
    doc = attrs(incident)
    doc["location"] = location_out(doc.get("location"))
    doc["open"] = incident.open
    return schemas.IncidentOut.model_validate(doc)


def _instant(name: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_instant(text, now=time.time())
    except ValueError as err:
        raise request_error(422, name, "invalid_time", str(err)) from None


@router.get("/incidents", response_model=schemas.IncidentPage, responses=INVALID)
def list_incidents(
        request: Request,
        state: Annotated[State | None, Query(description="'open' (needs a person) or a lifecycle state")] = None,
        sensor_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        site: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        zone: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        kind: Annotated[schemas.Kind | None, Query()] = None,
        since: Annotated[str | None, Query(description="raised at or after: '2h' (ago), ISO 8601 or epoch "
                                                       "seconds")] = None,
        until: Annotated[str | None, Query(description="raised before: '30m' (ago), ISO 8601 or epoch seconds")] = None,
        include_test: Annotated[bool, Query(description="include test alarms (smoke test-alarm)")] = True,
        limit: Annotated[int, Query(ge=1, description="page size, at most alerting.operator_page_limit")] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    page_limit = request.app.state.page_limit
    if limit > page_limit:
        raise request_error(422, "limit", "too_large", f"{limit} > {page_limit} (alerting.operator_page_limit)")
    found = store_of(request).list_incidents(
        state=state, sensor_id=sensor_id, site=site, zone=zone, kind=kind, since=_instant("since", since),
        until=_instant("until", until), include_test=include_test, limit=limit + 1, offset=offset)
    more = len(found) > limit
    return json_response(schemas.IncidentPage(
        incidents=[incident_out(i) for i in found[:limit]], limit=limit, offset=offset,
        next_offset=offset + limit if more else None))


@router.get("/incidents/{alert_id}", response_model=schemas.IncidentDetailOut, responses=NOT_FOUND)
def incident_detail(request: Request, alert_id: str = AlertId) -> Response:
    detail = store_of(request).incident(alert_id)
    if detail is None:
        raise request_error(404, "alert_id", "unknown", f"no incident {alert_id}")
    return json_response(schemas.IncidentDetailOut(
        incident=incident_out(detail.incident),
        events=[schemas.EventOut.model_validate(attrs(e)) for e in detail.events],
        acknowledgements=[schemas.AcknowledgementOut.model_validate(attrs(a)) for a in detail.acknowledgements],
        deliveries=[schemas.DeliveryOut.model_validate(attrs(d)) for d in detail.deliveries]))


@router.post("/incidents/{alert_id}/ack", response_model=schemas.IncidentOut,
             responses={**NOT_FOUND, **CONFLICT, **INVALID})
def acknowledge(request: Request, body: schemas.AckRequest, alert_id: str = AlertId) -> Response:
    try:
        incident = store_of(request).acknowledge(alert_id, by=body.by, outcome=body.outcome, note=body.note,
                                                 at=time.time())
    except UnknownIncident:
        raise request_error(404, "alert_id", "unknown", f"no incident {alert_id}") from None
    except InvalidTransition as err:
        raise request_error(409, "state", "invalid_transition", str(err)) from None
    request.app.state.metrics.acknowledged(body.outcome)
    return json_response(incident_out(incident))


@router.post("/incidents/{alert_id}/resolve", response_model=schemas.IncidentOut,
             responses={**NOT_FOUND, **CONFLICT, **INVALID})
def resolve(request: Request, body: schemas.ResolveRequest, alert_id: str = AlertId) -> Response:
    try:
        incident = store_of(request).resolve(alert_id, by=body.by, note=body.note, at=time.time())
    except UnknownIncident:
        raise request_error(404, "alert_id", "unknown", f"no incident {alert_id}") from None
    except InvalidTransition as err:
        raise request_error(409, "state", "invalid_transition", str(err)) from None
    return json_response(incident_out(incident))
