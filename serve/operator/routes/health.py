"""``GET /health`` (can the store be read?) and ``GET /metrics`` (request counters and the fleet KPIs)."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serve.errors import json_response
from serve.operator import schemas
from serve.operator.metrics import PROMETHEUS_TEXT
from serve.operator.routes import store_of
from serve.operator.routes.kpis import kpi_gauges
from serve.routes.health import SERVICE_VERSION
from serve.routes.stats import replica_id

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/health", response_model=schemas.OperatorHealth,
            responses={503: {"model": schemas.OperatorHealth, "description": "the store cannot be read"}})
def health(request: Request) -> Response:
    try:
        store_of(request).list_incidents(limit=1)
        store = "ok"
    except Exception as err:  # health reports the cause instead of failing
        store = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        logger.error("operator health: the alert store cannot be read: %s", store)
    healthy = store == "ok"
    return json_response(schemas.OperatorHealth(
        status="healthy" if healthy else "degraded", store=store, version=SERVICE_VERSION,
        uptime_seconds=round(time.time() - request.app.state.metrics.started, 3)), status=200 if healthy else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {PROMETHEUS_TEXT: {}},
                             "description": "this replica's operator requests, and the alert service's KPIs"}})
def metrics(request: Request) -> Response:
    kpis = store_of(request).kpis(time.time())
    body = request.app.state.metrics.prometheus_text(replica_id(), kpi_gauges(kpis))
    return Response(body, media_type=PROMETHEUS_TEXT)
