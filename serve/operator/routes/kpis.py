"""``GET /kpis``: the fleet figures of the alert service (unwanted alarms per 100 detectors per year and per
device under BS 5839-1, time to acknowledge, open and unacknowledged incidents, deliveries per channel),
and the same figures as Prometheus gauges for ``GET /metrics``."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serve.errors import json_response
from serve.operator import schemas
from serve.operator.metrics import gauge
from serve.operator.routes import attrs, store_of

router = APIRouter(tags=["kpis"])


def kpis_out(kpis: Any) -> schemas.KpisOut:
    doc = attrs(kpis)
    doc["devices"] = [attrs(d) for d in kpis.devices]
    return schemas.KpisOut.model_validate(doc)


@router.get("/kpis", response_model=schemas.KpisOut)
def fleet_kpis(request: Request) -> Response:
    return json_response(kpis_out(store_of(request).kpis(time.time())))


def kpi_gauges(kpis: Any) -> list[str]:
    """The KPIs as Prometheus gauges (a figure with nothing to measure yet is left out, never 0)."""
    return [
        *gauge("smoke_alert_detectors", "detectors in the sensors table", [({}, kpis.detectors)]),
        *gauge("smoke_alert_unwanted_alarms_12m", "unwanted (nuisance, equipment fault) fire alarms in the last "
               "12 months, test alarms excluded", [({}, kpis.unwanted_alarms_12m)]),
        *gauge("smoke_alert_unwanted_per_100_detectors_per_year", "unwanted alarms per 100 detectors per year "
               "(BS 5839-1)", [({}, kpis.unwanted_per_100_detectors_per_year)]),
        *gauge("smoke_alert_devices_flagged", "detectors with 3 or more unwanted alarms in 12 months",
               [({}, len(kpis.flagged_devices))]),
        *gauge("smoke_alert_ack_time_seconds", "time from raised to acknowledged over the last 12 months",
               [({"quantile": "0.5"}, kpis.ack_time_p50_s), ({"quantile": "0.95"}, kpis.ack_time_p95_s)]),
        *gauge("smoke_alert_incidents_open", "incidents someone still has to act on", [({}, kpis.open_incidents)]),
        *gauge("smoke_alert_incidents_unacknowledged", "open incidents nobody has acknowledged",
               [({}, kpis.unacknowledged)]),
        *gauge("smoke_alert_outbox_deliveries", "notifications in the outbox by channel and status",
               [({"channel": channel, "status": status}, count)
                for channel, by_status in sorted(kpis.deliveries.items())
                for status, count in sorted(by_status.items())]),
    ]
