"""``GET /health``: is a model loaded, and which version each variant serves (load balancers read it)."""

from __future__ import annotations

import time
from importlib import metadata as importlib_metadata

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serve import schemas
from serve.errors import json_response
from serve.routes import backend_of, now

try:
    SERVICE_VERSION = importlib_metadata.version("smoke-detect")
except importlib_metadata.PackageNotFoundError:  # running from a checkout that is not installed
    SERVICE_VERSION = "0.0.0+unknown"

router = APIRouter()


@router.get("/health", response_model=schemas.HealthResponse)
async def health(request: Request) -> Response:
    backend = backend_of(request)
    server = backend.server
    primary = server.primary.model
    return json_response(schemas.HealthResponse(
        status="healthy" if server.loaded else "degraded",
        timestamp=now(),
        version=SERVICE_VERSION,
        model_loaded=server.loaded,
        model_version=primary.version if primary else None,
        uptime_seconds=round(time.time() - backend.metrics.started, 3),
        variants=server.describe(),
    ))
