"""``GET /fleet``: every sensor of the sensors table by zone, with the age of its last reading in the lake, its
open trouble (silent, stuck) and whether a silence covers it: which sensors cannot be trusted right now.

The last reading comes from the Parquet lake (``stream.lake_dir``) over the last ``window_s`` seconds;
the stream flushes it every few seconds, so an age is accurate to a flush. A sensor with no reading in
the window says so (``last_reading_at`` null), never an age of 0. The answer is kept for a few seconds,
so many open consoles read the lake once.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from alerting.silences import matches
from ingest.lake import LakeError, read_lake
from ingest.schema import SENSOR_ID, TIMESTAMP
from serve.errors import json_response
from serve.operator import schemas
from serve.operator.routes import store_of

router = APIRouter(tags=["sensors"])

TROUBLE_KINDS = ("sensor_silent", "sensor_stuck")
CACHE_S = 3.0


class FleetCache:
    """The last answers by window, for ``CACHE_S`` (one per app: its store and lake)."""

    def __init__(self) -> None:
        self.answers: dict[float, tuple[float, dict[str, Any]]] = {}
        self.lock = threading.Lock()


def last_readings(lake: str | None, since: float) -> tuple[dict[str, float], str | None]:
    """sensor_id -> time of its last reading since ``since``, and why there are none when the lake cannot be read."""
    if not lake:
        return {}, "the operator API has no lake configured"
    try:
        frame = read_lake(lake, columns=[SENSOR_ID, TIMESTAMP], since=since)
    except LakeError as err:
        return {}, str(err)
    if frame.empty:
        return {}, None
    return {str(k): float(v) for k, v in frame.groupby(SENSOR_ID)[TIMESTAMP].max().items()}, None


@router.get("/fleet", response_model=schemas.FleetOut)
def fleet(request: Request, window_s: Annotated[float, Query(ge=10, le=86400)] = 600.0) -> Response:
    lake = request.app.state.lake_dir
    cache: FleetCache = request.app.state.fleet_cache
    now = time.time()
    with cache.lock:
        cached = cache.answers.get(window_s)
        if cached is not None and now - cached[0] < CACHE_S:
            return json_response(schemas.FleetOut.model_validate(cached[1]))
    store = store_of(request)
    sensors = store.sensors()
    trouble: dict[str, list[str]] = {}
    for incident in store.list_incidents(state="open", limit=10_000):
        if incident.kind in TROUBLE_KINDS:
            trouble.setdefault(incident.sensor_id, []).append(incident.kind)
    silences = store.silences(active_at=now)
    seen, note = last_readings(lake, now - window_s)
    zones: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in sensors:
        last = seen.get(s.sensor_id)
        kinds = sorted(set(trouble.get(s.sensor_id, [])))
        silenced = any(matches(x, sensor_id=s.sensor_id, zone=s.zone, site=s.site, kind=k, at=now)
                       for x in silences for k in ("fire", *TROUBLE_KINDS))
        zones.setdefault((s.site, s.zone), []).append({
            "sensor_id": s.sensor_id, "label": s.location.label(), "last_reading_at": last,
            "age_s": None if last is None else max(0.0, now - last), "trouble": kinds, "silenced": silenced,
            "trusted": bool(last is not None and not kinds)})
    body = {"at": now, "window_s": window_s, "note": note, "zones": [
        {"site": site, "zone": zone, "sensors": sorted(members, key=lambda m: m["sensor_id"])}
        for (site, zone), members in sorted(zones.items())]}
    with cache.lock:
        cache.answers[window_s] = (now, body)
    return json_response(schemas.FleetOut.model_validate(body))
