"""The Ray Serve application: one deployment that is the model plus its FastAPI ingress.

Following Ray Serve's own examples, the replica that parses the HTTP request
also holds the model: on this 2-core target a second deployment behind a handle
would add a process hop to every prediction for no gain (LightGBM scores a
batch in well under a millisecond). Replicas scale out as a whole under the
``autoscaling_config`` of ``configs/serve.yaml``.

``serve deploy configs/serve.yaml`` imports :func:`app_builder`; ``smoke serve
start`` and the tests call :func:`build_app` with settings in hand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application

from ingest.settings import REPO_ROOT, ServeSettings, load_settings
from serve.api import create_api
from serve.deployment import SERVE_CONFIG, deployment_options
from serve.metrics import ServeMetrics
from serve.model import ModelServer, prediction_fields, score_and_count, score_one

logger = logging.getLogger(__name__)

DEPLOYMENT_NAME = "SmokeDetector"


class AppConfig(BaseModel):
    """Everything a replica needs, resolved before deployment (replicas read no files or environment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    serve: ServeSettings
    registry_dir: str  # absolute
    model_name: str


# No options here: they all come from configs/serve.yaml (build_app, `serve deploy`), their one home.
@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress()
class SmokeDetector:
    """FastAPI ingress and the model(s) it serves, with hot reload and A/B variants."""

    def __init__(self, config: AppConfig) -> None:
        self.settings = config.serve
        self.metrics = ServeMetrics(ray_metrics=True)
        self.server = ModelServer(config.registry_dir, config.model_name, config.serve)
        self.server.on_swap = self._version_changed
        self._predicting = 0  # /predict calls inside predict_one now
        # Load before taking traffic; with nothing promoted yet the replica still starts
        # (health says "degraded", /predict answers 503) and the poller loads the first model.
        self.server.refresh()
        self._predict_batched.set_max_batch_size(self.settings.batch_max_size)
        self._predict_batched.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)

    def __serve_build_asgi_app__(self):
        # Built per replica, after __init__, so the routes close over this replica's models.
        return create_api(self)

    def _version_changed(self, old: str | None, new: str) -> None:
        if old is not None:
            self.metrics.model_version(old, active=False)
        self.metrics.model_version(new, active=True)

    async def predict_one(self, values: np.ndarray, sensor_id: str | None) -> dict[str, Any]:
        """Score a reading through ``@serve.batch`` when other /predict calls are in flight, else at once.

        The batch hand-off costs about 0.17 ms a request (bench/serve.py at concurrency 1, measured
        on the replica's own port: 0.79 ms p50 through the batch, 0.62 ms scored at once). It pays
        for itself only when there is something to batch with: at concurrency 32, scoring every
        request alone cut throughput from about 2,200 to 1,600 requests/s. One turn of the event
        loop first lets requests that arrived together all get here, so under load they still
        share a model call.
        """
        self._predicting += 1
        try:
            await asyncio.sleep(0)
            if self._predicting == 1:
                return score_one(self.server, self.metrics, values, sensor_id)
            return await self._predict_batched((values, sensor_id))
        finally:
            self._predicting -= 1

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def _predict_batched(self, requests: list[tuple[np.ndarray, str | None]]) -> list[dict[str, Any]]:
        # Concurrent /predict calls on this replica are scored together: one model call per variant.
        self.metrics.predict_call(len(requests), batched=True)
        values = np.stack([r[0] for r in requests])
        scored = score_and_count(self.server, self.metrics, values, [r[1] for r in requests])
        return [prediction_fields(scored, i) for i in range(len(requests))]

    def check_health(self) -> None:
        # Serve restarts a replica whose health check raises. A missing model is not a reason
        # (a restart would not bring one; /health says "degraded"), but a reload poller that has
        # stopped is: the replica would serve a stale version forever.
        stale = time.monotonic() - self.server.last_refresh
        limit = max(60.0, 20 * self.settings.reload_poll_s)
        if stale > limit:
            raise RuntimeError(f"model poller silent for {stale:.0f} s (limit {limit:.0f} s): restarting replica")


def _resolve(path: str) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (REPO_ROOT / p).resolve())


def build_app(serve_settings: ServeSettings, registry_dir: str, model_name: str,
              overrides: dict[str, Any] | None = None, serve_config: str | Path = SERVE_CONFIG) -> Application:
    """The application for settings in hand, with the deployment options of the Serve config.

    ``overrides`` replace options of the config's deployment entry (for example
    ``{"num_replicas": 1}`` in tests and benchmarks; a fixed replica count drops the
    ``autoscaling_config``).
    """
    config = AppConfig(serve=serve_settings, registry_dir=_resolve(registry_dir), model_name=model_name)
    options = {**deployment_options(serve_config), **(overrides or {})}
    if options.get("num_replicas") is not None:
        options.pop("autoscaling_config", None)
    # A replica admits at most max_ongoing_requests at once: below batch_max_size a batch can never fill.
    ongoing = options.get("max_ongoing_requests", SmokeDetector.max_ongoing_requests)
    if ongoing < serve_settings.batch_max_size:
        raise ValueError(f"max_ongoing_requests ({ongoing}) must be >= serve.batch_max_size "
                         f"({serve_settings.batch_max_size})")
    return SmokeDetector.options(**options).bind(config)


class BuilderArgs(BaseModel):
    """``args:`` of the application in configs/serve.yaml."""

    model_config = ConfigDict(extra="forbid")

    config: str | None = None  # pipeline settings file; default configs/pipeline.yaml
    serve: dict[str, Any] = {}  # overrides of the serve section
    registry_dir: str | None = None
    model_name: str | None = None


def app_builder(args: BuilderArgs | dict[str, Any]) -> Application:
    """Entry point of ``serve deploy configs/serve.yaml`` (``import_path: serve.app:app_builder``).

    Settings come from the pipeline settings file and ``SMOKE_*`` environment
    variables (set them under ``runtime_env.env_vars`` in the Serve config), then
    ``args.serve`` overrides; relative paths are taken from the project root,
    because the builder does not run in the caller's directory.
    """
    # Ray converts args to the annotated model only when the annotation is a class; with
    # postponed annotations (``from __future__ import annotations``) it hands over the dict.
    args = args if isinstance(args, BuilderArgs) else BuilderArgs.model_validate(args or {})
    settings = load_settings(_resolve(args.config) if args.config else None)
    serve_settings = ServeSettings.model_validate({**settings.serve.model_dump(), **args.serve})
    return build_app(serve_settings, args.registry_dir or settings.train.registry_dir,
                     args.model_name or settings.train.model_name)
