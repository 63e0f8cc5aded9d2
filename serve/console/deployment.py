"""Deploying the console on a running Ray cluster, beside the operator API (``smoke up`` calls it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ingest.settings import Settings
from serve.deployment import SERVE_CONFIG

logger = logging.getLogger(__name__)


def console_url(settings: Settings) -> str:
    return f"http://{settings.serve.host}:{settings.serve.port}{settings.alerting.console_route_prefix}"


def deploy_console(settings: Settings, serve_config: str | Path = SERVE_CONFIG,
                   overrides: dict[str, Any] | None = None) -> str:
    """Deploy (or update) the console; returns its URL once it is RUNNING. Connect to Ray first."""
    import ray
    from ray import serve

    from serve.console.app import build_console_app

    if not ray.is_initialized():
        raise RuntimeError("connect to Ray first (the caller's driver, with an explicit address)")
    s, alerting = settings.serve, settings.alerting
    serve.start(http_options={"host": s.host, "port": s.port})
    app = build_console_app(alerting, bool(s.api_keys), overrides, serve_config)
    serve.run(app, name=alerting.console_app_name, route_prefix=alerting.console_route_prefix, blocking=False)
    url = console_url(settings)
    logger.info("serve: application %s running at %s/", alerting.console_app_name, url)
    return url
