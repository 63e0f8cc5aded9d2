"""Deploying, inspecting and removing the operator API on a running Ray cluster (``smoke up`` calls these).

It runs on the prediction app's Serve HTTP address under ``alerting.operator_route_prefix``;
deployment options come from ``configs/serve.yaml``. The caller connects to Ray first.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ingest.settings import Settings
from serve.deployment import SERVE_CONFIG

logger = logging.getLogger(__name__)


def operator_url(settings: Settings) -> str:
    return f"http://{settings.serve.host}:{settings.serve.port}{settings.alerting.operator_route_prefix}"


def deploy_operator(settings: Settings, serve_config: str | Path = SERVE_CONFIG,
                    overrides: dict[str, Any] | None = None) -> str:
    """Deploy (or update in place) the operator API; returns its base URL once it is RUNNING.

    Serve must be running (the prediction app's :func:`serve.deployment.deploy_app` starts it
    on ``serve.host``/``serve.port``); a relative SQLite path of ``alerting.store_dsn`` is
    taken from the project root, as ``serve deploy`` would.
    """
    import ray
    from ray import serve

    from serve.operator.app import build_operator_app

    if not ray.is_initialized():
        raise RuntimeError("connect to Ray first (the caller's driver, with an explicit address)")
    s, alerting = settings.serve, settings.alerting
    serve.start(http_options={"host": s.host, "port": s.port})
    app = build_operator_app(s, alerting.store_dsn, alerting.operator_route_prefix, alerting.operator_page_limit,
                             settings.stream.lake_dir, overrides, serve_config)
    serve.run(app, name=alerting.operator_app_name, route_prefix=alerting.operator_route_prefix, blocking=False)
    url = operator_url(settings)
    logger.info("serve: application %s running at %s", alerting.operator_app_name, url)
    return url
