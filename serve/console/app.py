"""The console as a Ray Serve application: the static page, and ``config.json`` telling it where the API is.

The page carries no data and no key: it asks the operator for an API key and sends it to the
operator API itself, so the console's own routes are open (a wrong key gets the API's 403 and
the page shows a login error, never data).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application
from starlette.staticfiles import StaticFiles

from ingest.settings import REPO_ROOT, AlertingSettings, load_settings
from serve.deployment import SERVE_CONFIG, deployment_options

DEPLOYMENT_NAME = "OperatorConsole"
IMPORT_PATH = "serve.console.app:app_builder"
STATIC = Path(str(resources.files("serve.console") / "static"))


class ConsoleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    route_prefix: str  # where Serve mounts the console, e.g. /console (asset links are absolute)
    api_prefix: str  # where the operator API is on the same origin, e.g. /ops
    poll_s: float
    board_limit: int  # open incidents the board asks for (the API's page limit)
    auth_required: bool


def create_console(config: ConsoleConfig) -> FastAPI:
    """The console's routes: ``/`` the page, ``/config.json`` its settings, ``/static/*`` its assets."""
    app = FastAPI(title="Smoke detection operator console", docs_url=None, redoc_url=None, openapi_url=None)
    # Absolute asset links: the page works at /console and at /console/ alike.
    html = (STATIC / "index.html").read_text().replace("__PREFIX__", config.route_prefix)

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        # no-cache: a new version of the page is picked up by the next load, not a day later.
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    @app.get("/index.html", include_in_schema=False)
    def index() -> Response:
        return RedirectResponse(config.route_prefix + "/")

    @app.get("/config.json", include_in_schema=False)
    def settings() -> Response:
        return JSONResponse(config.model_dump(), headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress()
class OperatorConsole:
    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config

    def __serve_build_asgi_app__(self):
        return create_console(self.config)


def build_console_app(alerting: AlertingSettings, auth_required: bool, overrides: dict[str, Any] | None = None,
                      serve_config: str | Path = SERVE_CONFIG) -> Application:
    config = ConsoleConfig(route_prefix=alerting.console_route_prefix, api_prefix=alerting.operator_route_prefix,
                           poll_s=alerting.console_poll_s, board_limit=alerting.operator_page_limit,
                           auth_required=auth_required)
    options = {**deployment_options(serve_config, IMPORT_PATH), **(overrides or {})}
    return OperatorConsole.options(**options).bind(config)


class BuilderArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: str | None = None  # pipeline settings file; default configs/pipeline.yaml


def app_builder(args: BuilderArgs | dict[str, Any]) -> Application:
    """Entry point of ``serve deploy configs/serve.yaml`` (``import_path: serve.console.app:app_builder``)."""
    args = args if isinstance(args, BuilderArgs) else BuilderArgs.model_validate(args or {})
    path = args.config
    settings = load_settings(str(REPO_ROOT / path) if path and not Path(path).is_absolute() else path)
    return build_console_app(settings.alerting, bool(settings.serve.api_keys))
