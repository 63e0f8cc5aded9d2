"""The HTTP API of the prediction service: :func:`create_api` assembles it around a backend.

The routes live in :mod:`serve.routes` (one router per concern), request parsing
in :mod:`serve.parsing`, the error shape in :mod:`serve.errors`, scoring in
:mod:`serve.model`. What this module adds is the app itself: the routers, the
error handlers, the hot-reload poller as the app's lifespan, and the optional
API-key guard and CORS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from serve.auth import ApiGuard
from serve.backend import Backend
from serve.errors import install_error_handlers
from serve.metrics import GAUGE_REFRESH_S, ServeMetrics
from serve.model import ModelServer
from serve.rate_limit import RateLimiter
from serve.routes import health, model_info, predict, stats, validate
from serve.routes.health import SERVICE_VERSION

logger = logging.getLogger(__name__)

DESCRIPTION = ("Fire probability for readings of the smoke sensor kit (Kaggle Smoke Detection Dataset). "
               "Canonical (`temperature_c`), seed (`Temperature`) and Kaggle (`Temperature[C]`) field names are "
               "accepted. `probability` is always P(fire). Errors: 400 malformed JSON, 401/403 API key, 413 too "
               "large, 422 invalid field (the body names it), 429 rate limit, 503 no model yet.")


def create_api(backend: Backend) -> FastAPI:
    """The FastAPI app of the prediction service, around ``backend``."""
    settings = backend.settings

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Hot reload: poll the registry alias; loading runs in a thread so requests keep flowing.
        task = asyncio.create_task(_poll(backend.server, backend.metrics, settings.reload_poll_s))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="Smoke detection prediction API", version=SERVICE_VERSION, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.backend = backend
    for module in (health, predict, model_info, validate, stats):
        app.include_router(module.router)
    install_error_handlers(app, retry_after_s=settings.reload_poll_s)
    # Order matters: the guard runs inside CORS so that 401/429 answers still carry CORS headers.
    if settings.api_keys or settings.rate_limit_per_minute:
        limiter = (RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst,
                               max_keys=settings.rate_limit_max_keys) if settings.rate_limit_per_minute else None)
        app.add_middleware(ApiGuard, api_keys=settings.api_keys, limiter=limiter,
                           trusted_proxies=settings.trusted_proxies)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-API-Key", "Authorization"])
    return app


async def _poll(server: ModelServer, metrics: ServeMetrics, interval_s: float) -> None:
    """Every ``interval_s``: pick up a newly promoted model, then export feature drift; and at least
    every ``GAUGE_REFRESH_S`` set the gauges again, which Ray would otherwise stop exporting."""
    due = time.monotonic() + interval_s
    while True:
        await asyncio.sleep(max(min(due - time.monotonic(), GAUGE_REFRESH_S), 0.0))
        if time.monotonic() < due:
            metrics.refresh_gauges()
            continue
        due = time.monotonic() + interval_s
        try:
            await asyncio.to_thread(server.refresh)
            metrics.feature_drift(await asyncio.to_thread(server.drift))
            metrics.refresh_gauges()
        except Exception as err:  # keep polling: the next read may succeed
            logger.error("model poll failed, will retry in %.1f s: %s: %s", interval_s, type(err).__name__, err)
