"""The operator API's FastAPI app: :func:`create_operator_api` assembles it around an open alert store.

The routes live in :mod:`serve.operator.routes` (one router per concern); errors use the
prediction API's one body shape (:mod:`serve.errors`), API keys and rate limits its guard
(:mod:`serve.auth`), with the same ``serve.api_keys``: one key opens both APIs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from ingest.settings import ServeSettings
from serve.auth import OPEN_PATHS, ApiGuard
from serve.errors import install_error_handlers
from serve.metrics import GAUGE_REFRESH_S
from serve.operator.metrics import KpiGauges, OperatorMetrics, RequestCounter
from serve.operator.routes import fleet, health, incidents, kpis, readings, sensors, silences
from serve.rate_limit import RateLimiter
from serve.routes.health import SERVICE_VERSION

if TYPE_CHECKING:
    from alerting.store import AlertStore

logger = logging.getLogger(__name__)

DESCRIPTION = ("The alert service for the people on duty: incidents with their events, evidence, acknowledgements "
               "and deliveries; acknowledge (with a BS 5839-1 outcome) and resolve; silences (maintenance windows); "
               "the sensors table (where each detector is); fleet KPIs. Times are epoch seconds. Errors: 401/403 "
               "API key (the prediction API's keys), 404 unknown id, 422 invalid field (the body names it), 429 "
               "rate limit.")


def create_operator_api(store: AlertStore, settings: ServeSettings, page_limit: int, route_prefix: str = "",
                        metrics: OperatorMetrics | None = None, kpi_gauges: KpiGauges | None = None,
                        lake_dir: str | None = None) -> FastAPI:
    """The FastAPI app of the operator API around ``store``.

    ``route_prefix`` is where Serve mounts it (``/ops``): the guard sees full paths, so the
    open paths (``/health``, the API description) are listed with and without it. With
    ``kpi_gauges`` (in a Serve replica) the KPIs are published as Ray metrics every few seconds.
    ``lake_dir`` is the Parquet lake the readings around an incident are read from.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_publish_kpis(store, kpi_gauges)) if kpi_gauges is not None else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="Smoke detection operator API", version=SERVICE_VERSION, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.store = store
    app.state.page_limit = page_limit
    app.state.lake_dir = lake_dir
    app.state.fleet_cache = fleet.FleetCache()
    app.state.metrics = metrics or OperatorMetrics()
    for module in (health, incidents, readings, silences, sensors, fleet, kpis):
        app.include_router(module.router)
    install_error_handlers(app, retry_after_s=1.0)
    if settings.api_keys or settings.rate_limit_per_minute:
        limiter = (RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst,
                               max_keys=settings.rate_limit_max_keys) if settings.rate_limit_per_minute else None)
        open_paths = OPEN_PATHS | {route_prefix + path for path in OPEN_PATHS} if route_prefix else OPEN_PATHS
        app.add_middleware(ApiGuard, api_keys=settings.api_keys, limiter=limiter, open_paths=frozenset(open_paths),
                           trusted_proxies=settings.trusted_proxies)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Content-Type", "X-API-Key", "Authorization"])
    # Outermost: every answer is counted, the guard's 401/403/429 too.
    app.add_middleware(RequestCounter, metrics=app.state.metrics)
    return app


async def _publish_kpis(store: AlertStore, gauges: KpiGauges) -> None:
    """Every ``GAUGE_REFRESH_S``: read the KPIs from the store (in a thread) and set the Ray gauges."""
    while True:
        try:
            gauges.publish(await asyncio.to_thread(store.kpis, time.time()))
        except Exception as err:  # keep publishing: the store may be back at the next turn
            logger.error("operator: cannot read the KPIs from the alert store, will retry in %.0f s: %s: %s",
                         GAUGE_REFRESH_S, type(err).__name__, err)
        await asyncio.sleep(GAUGE_REFRESH_S)
