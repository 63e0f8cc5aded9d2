"""The operator API's routes, one router per concern; :func:`serve.operator.api.create_operator_api` includes them.

Each route reaches the store through the app (:func:`store_of`). Routes that call the store are
plain ``def`` functions: the store is synchronous (SQLAlchemy), and FastAPI runs those in its
thread pool, so a slow query never stalls the event loop.

- ``health``: ``GET /health``, ``GET /metrics``
- ``incidents``: ``GET /incidents``, ``GET /incidents/{alert_id}``, ``POST .../ack``, ``POST .../resolve``
- ``silences``: ``GET|POST /silences``, ``DELETE /silences/{id}``
- ``readings``: ``GET /incidents/{alert_id}/readings`` (from the Parquet lake)
- ``sensors``: ``GET /sensors``, ``GET|PUT|DELETE /sensors/{sensor_id}``
- ``fleet``: ``GET /fleet`` (sensors by zone, last reading age, trouble)
- ``kpis``: ``GET /kpis``
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request

from alerting.notification import Location
from serve.operator import schemas
from serve.schemas import ErrorResponse

if TYPE_CHECKING:
    from alerting.store import AlertStore

INVALID = {422: {"model": ErrorResponse, "description": "a field is invalid (the body names it); nothing written"}}


def store_of(request: Request) -> AlertStore:
    return request.app.state.store


def location_out(location: Any) -> schemas.LocationOut:
    """The store's :class:`alerting.notification.Location` (or None) with the label a person reads."""
    location = location if isinstance(location, Location) else Location()
    return schemas.LocationOut(site=location.site, building=location.building, floor=location.floor,
                               zone=location.zone, description=location.description, label=location.label())


def attrs(record: Any) -> dict[str, Any]:
    """The fields of one of the store's frozen dataclasses, as a mapping a response schema validates."""
    return {f.name: getattr(record, f.name) for f in fields(record)} if is_dataclass(record) else dict(record)
