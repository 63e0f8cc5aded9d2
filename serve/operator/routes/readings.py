"""``GET /incidents/{alert_id}/readings``: the sensor's readings around an incident, from the Parquet lake,
for the console's plot with the raise and clear marks.

The window runs from ``before_s`` before the raised event to ``after_s`` after the clear (or now, while
it lasts). Long windows are thinned to at most ``max_points`` evenly spaced readings, so a plot stays
cheap; a lake that does not exist (yet) gives an empty series with the reason, never made-up values.
"""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ingest.lake import LakeError, read_lake
from ingest.schema import SENSOR_ID, TIMESTAMP
from serve.errors import json_response, request_error
from serve.operator import schemas
from serve.operator.routes import store_of
from serve.operator.routes.incidents import NOT_FOUND, AlertId

router = APIRouter(tags=["incidents"])

# What an operator looks at first: particles, heat, gas, and humidity (steam looks like smoke to particles).
KEY_CHANNELS = ("pm2_5_ugm3", "temperature_c", "tvoc_ppb", "eco2_ppm", "humidity_pct")


@router.get("/incidents/{alert_id}/readings", response_model=schemas.ReadingsOut, responses=NOT_FOUND)
def incident_readings(request: Request, alert_id: str = AlertId,
                      before_s: Annotated[float, Query(ge=0, le=86400)] = 600.0,
                      after_s: Annotated[float, Query(ge=0, le=86400)] = 300.0,
                      max_points: Annotated[int, Query(ge=2, le=5000)] = 600) -> Response:
    detail = store_of(request).incident(alert_id)
    if detail is None:
        raise request_error(404, "alert_id", "unknown", f"no incident {alert_id}")
    incident = detail.incident
    raised = incident.raised_at if incident.raised_at is not None else incident.opened_at
    end = incident.cleared_at if incident.cleared_at is not None else time.time()
    start, stop = raised - before_s, max(end, raised) + after_s
    body = {"alert_id": alert_id, "sensor_id": incident.sensor_id, "start": start, "end": stop,
            "raised_at": incident.raised_at, "cleared_at": incident.cleared_at, "channels": list(KEY_CHANNELS),
            "timestamps": [], "values": {c: [] for c in KEY_CHANNELS}, "note": None}
    lake = request.app.state.lake_dir
    try:
        frame = read_lake(lake, columns=[SENSOR_ID, TIMESTAMP, *KEY_CHANNELS], since=start, until=stop,
                          sensor_id=incident.sensor_id) if lake else None
    except LakeError as err:
        frame, body["note"] = None, f"no readings: {err}"
    if frame is None:
        body["note"] = body["note"] or "no readings: the operator API has no lake configured"
    elif frame.empty:
        body["note"] = f"no readings of {incident.sensor_id} in the lake for this window"
    else:
        if len(frame) > max_points:
            frame = frame.iloc[np.linspace(0, len(frame) - 1, max_points).round().astype(int)]
        body["timestamps"] = frame[TIMESTAMP].astype(float).tolist()
        # Missing values stay null (a gap in the plot), never 0.
        body["values"] = {c: [None if v != v else float(v) for v in frame[c].tolist()] for c in KEY_CHANNELS}
    return json_response(schemas.ReadingsOut.model_validate(body))
