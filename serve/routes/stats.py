"""The replica's counters: ``GET /predictions/stats`` (JSON) and ``GET /metrics`` (Prometheus text).

Both describe the replica that answered (``scope: replica``); the cluster-wide
series of every replica are on Ray's metrics export port (docs/metrics.md).
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serve import schemas
from serve.errors import json_response
from serve.routes import backend_of

router = APIRouter()

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def replica_id() -> str:
    """The Serve replica's id inside Ray; the process id elsewhere (plain uvicorn)."""
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # not in a Serve replica
        return f"pid-{os.getpid()}"


@router.get("/predictions/stats", response_model=schemas.StatsResponse)
async def stats(request: Request) -> Response:
    backend = backend_of(request)
    return json_response(schemas.StatsResponse(**backend.metrics.snapshot(), variants=backend.server.describe()))


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {PROMETHEUS_TEXT: {}},
                             "description": "this replica's request, prediction and validation counters"}})
async def metrics(request: Request) -> Response:
    return Response(backend_of(request).metrics.prometheus_text(replica_id()), media_type=PROMETHEUS_TEXT)
