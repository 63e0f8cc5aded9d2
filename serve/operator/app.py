"""The operator API as a Ray Serve application: one small deployment holding an open alert store.

``smoke up`` calls :func:`build_operator_app` with settings in hand (through
:mod:`serve.operator.deployment`); ``serve deploy configs/serve.yaml`` imports
:func:`app_builder`. Deployment options (replicas, CPUs) live in ``configs/serve.yaml``
beside the prediction app's, their one home.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application

from alerting.database import absolute_dsn
from ingest.settings import REPO_ROOT, ServeSettings, load_settings
from serve.deployment import SERVE_CONFIG, deployment_options

DEPLOYMENT_NAME = "OperatorApi"
IMPORT_PATH = "serve.operator.app:app_builder"


class OperatorConfig(BaseModel):
    """Everything a replica needs, resolved before deployment (replicas read no files or environment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    serve: ServeSettings  # API keys, rate limit, CORS: the prediction API's
    store_dsn: str  # SQLite paths absolute
    route_prefix: str
    page_limit: int
    lake_dir: str  # absolute, or a filesystem URI: the readings around an incident


# No options here: they come from configs/serve.yaml, their one home.
@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress()
class OperatorApi:
    """FastAPI ingress of the operator API around one open store."""

    def __init__(self, config: OperatorConfig) -> None:
        from alerting.store import AlertStore

        self.config = config
        self.store = AlertStore.open(config.store_dsn)

    def __serve_build_asgi_app__(self):
        from serve.operator.api import create_operator_api
        from serve.operator.metrics import KpiGauges

        return create_operator_api(self.store, self.config.serve, self.config.page_limit, self.config.route_prefix,
                                   kpi_gauges=KpiGauges(), lake_dir=self.config.lake_dir)

    def __del__(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            store.close()


def build_operator_app(serve_settings: ServeSettings, store_dsn: str, route_prefix: str, page_limit: int,
                       lake_dir: str, overrides: dict[str, Any] | None = None,
                       serve_config: str | Path = SERVE_CONFIG) -> Application:
    """The application for settings in hand, with the deployment options of the Serve config.

    Relative paths (a SQLite store, the lake) are taken from the project root, as ``serve deploy`` runs it.
    """
    lake = lake_dir if "://" in lake_dir else str((REPO_ROOT / lake_dir).resolve())
    config = OperatorConfig(serve=serve_settings, store_dsn=absolute_dsn(store_dsn, REPO_ROOT),
                            route_prefix=route_prefix, page_limit=page_limit, lake_dir=lake)
    options = {**deployment_options(serve_config, IMPORT_PATH), **(overrides or {})}
    return OperatorApi.options(**options).bind(config)


class BuilderArgs(BaseModel):
    """``args:`` of the operator application in configs/serve.yaml."""

    model_config = ConfigDict(extra="forbid")

    config: str | None = None  # pipeline settings file; default configs/pipeline.yaml
    store_dsn: str | None = None  # default alerting.store_dsn


def app_builder(args: BuilderArgs | dict[str, Any]) -> Application:
    """Entry point of ``serve deploy configs/serve.yaml`` (``import_path: serve.operator.app:app_builder``).

    The route prefix is the one the Serve config gives the application; keep it equal to
    ``alerting.operator_route_prefix`` so the console finds the API.
    """
    args = args if isinstance(args, BuilderArgs) else BuilderArgs.model_validate(args or {})
    path = args.config
    settings = load_settings(str(REPO_ROOT / path) if path and not Path(path).is_absolute() else path)
    alerting = settings.alerting
    return build_operator_app(settings.serve, args.store_dsn or alerting.store_dsn, alerting.operator_route_prefix,
                              alerting.operator_page_limit, settings.stream.lake_dir)
