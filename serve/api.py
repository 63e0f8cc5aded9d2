"""The HTTP API: FastAPI routes over a backend that scores readings.

:func:`create_api` builds the app around any :class:`Backend`. In Ray Serve the
backend is the ``SmokeDetector`` deployment itself (``serve.app``), whose
``predict_one`` goes through ``@serve.batch`` when other requests are in flight; ``bench/serve.py`` runs the very
same app under plain uvicorn with :class:`DirectBackend`, so the benchmark
measures what Serve adds and nothing else.

Parsing is deliberate rather than automatic: bodies are decoded with orjson and
every reading goes through :func:`ingest.validation.validate_records`, so a
missing, null, mistyped, non-finite or out-of-range value is a 422 naming the
field (never a zero), malformed JSON is a 400 and an oversized body or batch a
413. The OpenAPI schema still documents every body through ``serve.schemas``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from importlib import metadata as importlib_metadata
from typing import Any, Literal, Protocol

import numpy as np
import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ingest.schema import (
    ALIASES,
    CANONICAL_TO_KAGGLE,
    FIELD_BY_NAME,
    LEAKY_COLUMNS,
    MEASUREMENTS,
    SENSOR_ID,
    TIMESTAMP,
    Reason,
)
from ingest.settings import ServeSettings
from ingest.validation import Problem, format_timestamp, validate_records
from serve import schemas
from serve.auth import ApiGuard
from serve.metrics import GAUGE_REFRESH_S, ServeMetrics
from serve.model import ModelServer, NoModelError, Scored
from serve.rate_limit import RateLimiter

logger = logging.getLogger(__name__)

try:
    SERVICE_VERSION = importlib_metadata.version("smoke-detect")
except importlib_metadata.PackageNotFoundError:  # running from a checkout that is not installed
    SERVICE_VERSION = "0.0.0+unknown"

# Two reference readings for /predict/sample, under the seed API's names: the first
# row of the Kaggle data (normal indoor air) and a row from one of its fire sessions.
SAMPLES: dict[str, dict[str, float]] = {
    "normal": {"Temperature": 20.0, "Humidity": 57.36, "TVOC": 0.0, "eCO2": 400.0, "Raw H2": 12306.0,
               "Raw Ethanol": 18520.0, "Pressure": 939.735, "PM1.0": 0.0, "PM2.5": 0.0, "NC0.5": 0.0,
               "NC1.0": 0.0, "NC2.5": 0.0},
    "fire": {"Temperature": 26.2, "Humidity": 47.8, "TVOC": 1224.0, "eCO2": 400.0, "Raw H2": 12948.0,
             "Raw Ethanol": 19433.0, "Pressure": 938.82, "PM1.0": 1.9, "PM2.5": 1.98, "NC0.5": 13.1,
             "NC1.0": 2.04, "NC2.5": 0.046},
}
_JSON = "application/json"
_KNOWN_KEYS = frozenset(ALIASES) | {SENSOR_ID, TIMESTAMP}


class Backend(Protocol):
    """What the routes need: the models, the counters, the settings and a way to score one reading."""

    server: ModelServer
    metrics: ServeMetrics
    settings: ServeSettings

    async def predict_one(self, values: np.ndarray, sensor_id: str | None) -> dict[str, Any]: ...


def score_and_count(server: ModelServer, metrics: ServeMetrics, values: np.ndarray,
                    sensor_ids: list[str | None]) -> Scored:
    """Score a batch and count it per variant (and shadow agreement): one model call per variant."""
    scored = server.score(values, sensor_ids)
    for variant, (version, fire, no_fire) in scored.groups.items():
        metrics.predicted(variant, version, fire, no_fire)
    if scored.shadow is not None:
        shadow_threshold = server.shadow.model.threshold if server.shadow and server.shadow.model else 0.5
        agree = int(((scored.shadow >= shadow_threshold).astype(np.int64) == scored.prediction).sum())
        metrics.shadow(agree, len(values))
    return scored


def item(scored: Scored, i: int) -> dict[str, Any]:
    """Prediction fields of row ``i`` (the seed's shape plus probability, threshold and variant)."""
    p = float(scored.probability[i])
    y = int(scored.prediction[i])
    return {"prediction": y, "prediction_label": "fire" if y else "no_fire", "probability": p,
            "confidence": {"fire": p, "no_fire": 1.0 - p}, "threshold": float(scored.threshold[i]),
            "model_version": scored.version[i], "variant": scored.variant[i]}


def score_one(server: ModelServer, metrics: ServeMetrics, values: np.ndarray, sensor_id: str | None) -> dict[str, Any]:
    """Score one reading on its own: a model call of one row."""
    metrics.predict_call(1, batched=False)
    return item(score_and_count(server, metrics, values[None, :], [sensor_id]), 0)


class DirectBackend:
    """Scores each request as it comes (no Serve, no batching): the uvicorn baseline and unit use."""

    def __init__(self, server: ModelServer, metrics: ServeMetrics, settings: ServeSettings) -> None:
        self.server, self.metrics, self.settings = server, metrics, settings

    async def predict_one(self, values: np.ndarray, sensor_id: str | None) -> dict[str, Any]:
        return score_one(self.server, self.metrics, values, sensor_id)


class ApiError(Exception):
    """An HTTP error with the body of :class:`serve.schemas.ErrorResponse`."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors or [], headers


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type=_JSON, headers=headers)


def _field_error(problem: Problem) -> dict[str, Any]:
    spec = FIELD_BY_NAME.get(problem.field or "")
    return {"field": problem.field, "reason": problem.reason, "detail": problem.detail,
            "aliases": [spec.seed, spec.kaggle] if spec else []}


def _summary(problems: list[Problem]) -> str:
    parts = [f"{p.field or 'reading'}: {p.reason} ({p.detail})" for p in problems[:4]]
    more = f" and {len(problems) - 4} more" if len(problems) > 4 else ""
    return "invalid reading: " + "; ".join(parts) + more


def _now() -> str:
    return format_timestamp(time.time())


def create_api(backend: Backend) -> FastAPI:
    """The FastAPI app of the prediction service, around ``backend``."""
    settings = backend.settings
    server = backend.server
    metrics = backend.metrics
    max_body = settings.max_body_bytes

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Hot reload: poll the registry alias; loading runs in a thread so requests keep flowing.
        task = asyncio.create_task(_poll(server, metrics, settings.reload_poll_s))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        title="Smoke detection prediction API",
        version=SERVICE_VERSION,
        description=("Fire probability for readings of the smoke sensor kit (Kaggle Smoke Detection Dataset). "
                     "Canonical (`temperature_c`), seed (`Temperature`) and Kaggle (`Temperature[C]`) field "
                     "names are accepted. Errors: 400 malformed JSON, 401/403 API key, 413 too large, "
                     "422 invalid field (the body names it), 429 rate limit, 503 no model yet."),
        lifespan=lifespan,
    )

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        size = int(declared) if declared is not None and declared.isdigit() else None
        body = b""
        if size is None or size <= max_body:
            body = await request.body()
            size = len(body)
        if size > max_body:
            metrics.rejected([Reason.TOO_LARGE])
            raise ApiError(413, f"request body of {size} bytes exceeds the limit of {max_body} bytes", [
                {"field": None, "reason": Reason.TOO_LARGE, "detail": f"{size} > {max_body} bytes", "aliases": []}])
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as err:
            # Python's json writes NaN, Infinity and 1e999 by default; orjson refuses them. Decode
            # those with json so validation can answer 422 not_finite, naming the field.
            with contextlib.suppress(ValueError, RecursionError):
                return json.loads(body)
            metrics.rejected([Reason.NOT_JSON])
            raise ApiError(400, f"malformed JSON: {err}", [
                {"field": None, "reason": Reason.NOT_JSON, "detail": str(err)[:200], "aliases": []}]) from None

    def validate_one(doc: Any) -> tuple[np.ndarray, str | None]:
        batch = validate_records([doc], require_identity=False)
        if batch.rejected:
            problems = batch.rejected[0]
            metrics.rejected([p.reason for p in problems])
            raise ApiError(422, _summary(problems), [_field_error(p) for p in problems])
        return batch.values[0], batch.sensor_ids[0]

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError) -> Response:
        return _json({"error": err.message, "status_code": err.status, "errors": err.errors}, err.status,
                     err.headers)

    @app.exception_handler(NoModelError)
    async def _no_model(_: Request, err: NoModelError) -> Response:
        return _json({"error": f"no model available: {err}", "status_code": 503, "errors": []}, 503,
                     {"Retry-After": str(max(1, round(settings.reload_poll_s)))})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> Response:
        return _json({"error": str(err.detail), "status_code": err.status_code, "errors": []}, err.status_code,
                     getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _query_error(_: Request, err: RequestValidationError) -> Response:
        errors = [{"field": ".".join(str(x) for x in e["loc"][1:]) or None, "reason": e["type"],
                   "detail": e["msg"], "aliases": []} for e in err.errors()]
        first = errors[0] if errors else {"field": None, "detail": "invalid request"}
        return _json({"error": f"{first['field']}: {first['detail']}", "status_code": 422, "errors": errors}, 422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> Response:
        logger.error("%s %s failed: %s: %s", request.method, request.url.path, type(err).__name__, err)
        return _json({"error": f"internal error: {type(err).__name__}", "status_code": 500, "errors": []}, 500)

    reading_body = {"requestBody": {"required": True, "content": {_JSON: {"schema": schemas.reading_schema()}}}}
    batch_body = {"requestBody": {"required": True, "content": {_JSON: {"schema": {"oneOf": [
        {"type": "object", "required": ["data"],
         "properties": {"data": {"type": "array", "items": schemas.reading_schema()}}},
        {"type": "array", "items": schemas.reading_schema()},
    ]}}}}}
    errors_doc = {400: {"model": schemas.ErrorResponse, "description": "malformed JSON"},
                  413: {"model": schemas.ErrorResponse, "description": "body or batch too large"},
                  422: {"model": schemas.ErrorResponse, "description": "invalid field (named in the body)"},
                  503: {"model": schemas.ErrorResponse, "description": "no model loaded yet"}}

    @app.get("/health", response_model=schemas.HealthResponse)
    async def health() -> Response:
        primary = server.primary.model
        return _json({
            "status": "healthy" if server.loaded else "degraded",
            "timestamp": _now(),
            "version": SERVICE_VERSION,
            "model_loaded": server.loaded,
            "model_version": primary.version if primary else None,
            "uptime_seconds": round(time.time() - metrics.started, 3),
            "variants": server.describe(),
        })

    @app.post("/predict", responses={200: {"model": schemas.PredictResponse}, **errors_doc},
              openapi_extra=reading_body)
    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        values, sensor_id = validate_one(await read_json(request))
        result = await backend.predict_one(values, sensor_id)
        elapsed = time.perf_counter() - started
        metrics.latency(elapsed, [result["variant"]])
        result["processing_time_seconds"] = elapsed
        result["timestamp"] = _now()
        return _json(result)

    @app.post("/predict/batch", responses={200: {"model": schemas.BatchResponse}, **errors_doc},
              openapi_extra=batch_body)
    async def predict_batch(request: Request) -> Response:
        started = time.perf_counter()
        doc = await read_json(request)
        # Every rejection is counted by its reason, a malformed batch as a whole too.
        if isinstance(doc, dict):
            if "data" not in doc:
                metrics.rejected([Reason.MISSING_FIELD])
                raise ApiError(422, "data: missing_field (send {\"data\": [readings]} or a JSON list)",
                               [{"field": "data", "reason": Reason.MISSING_FIELD, "detail": "missing",
                                 "aliases": []}])
            doc = doc["data"]
        if not isinstance(doc, list):
            metrics.rejected([Reason.WRONG_TYPE])
            raise ApiError(422, f"data: wrong_type (a JSON {type(doc).__name__}, not a list of readings)",
                           [{"field": "data", "reason": Reason.WRONG_TYPE, "detail": "not a list", "aliases": []}])
        if len(doc) > settings.max_batch_rows:
            metrics.rejected([Reason.TOO_LARGE])
            raise ApiError(413, f"data: {len(doc)} readings exceed the limit of {settings.max_batch_rows} "
                                "per request; split the batch",
                           [{"field": "data", "reason": Reason.TOO_LARGE, "aliases": [],
                             "detail": f"{len(doc)} > {settings.max_batch_rows} readings"}])
        batch = validate_records(doc, require_identity=False)
        results: list[dict[str, Any]] = [{} for _ in doc]
        for i, problems in batch.rejected.items():
            metrics.rejected([p.reason for p in problems])
            results[i] = {"index": i, "error": _summary(problems), "errors": [_field_error(p) for p in problems]}
        fire = 0
        variants: list[str] = []
        if len(batch):
            scored = score_and_count(server, metrics, batch.values, batch.sensor_ids)
            fire = int(scored.prediction.sum())
            variants = list(scored.groups.keys() - {"shadow"})
            for k, i in enumerate(batch.index.tolist()):
                results[i] = {"index": i, **item(scored, k)}
        elapsed = time.perf_counter() - started
        metrics.latency(elapsed, variants or ["none"])
        return _json({
            "predictions": results,
            "summary": {"total_samples": len(doc), "successful_predictions": len(batch),
                        "fire_detections": fire, "no_fire_detections": len(batch) - fire,
                        "errors": len(batch.rejected)},
            "processing_time_seconds": elapsed,
            "timestamp": _now(),
        })

    async def sample(kind: Literal["normal", "fire"]) -> Response:
        started = time.perf_counter()
        reading = SAMPLES[kind]
        values, sensor_id = validate_one(reading)
        result = await backend.predict_one(values, sensor_id)
        elapsed = time.perf_counter() - started
        metrics.latency(elapsed, [result["variant"]])
        return _json({**result, "processing_time_seconds": elapsed, "timestamp": _now(),
                      "sample_kind": kind, "sample_data": reading})

    # 422 documented as ours: otherwise FastAPI documents its own HTTPValidationError shape, which
    # _query_error never sends.
    sample_doc = {200: {"model": schemas.SampleResponse},
                  422: {"model": schemas.ErrorResponse, "description": "invalid query value (named in the body)"},
                  503: errors_doc[503]}
    kind_query = Query("normal", description="which reference reading to score")

    @app.post("/predict/sample", responses=sample_doc)
    async def predict_sample_post(kind: Literal["normal", "fire"] = kind_query) -> Response:
        return await sample(kind)

    @app.get("/predict/sample", responses=sample_doc)
    async def predict_sample_get(kind: Literal["normal", "fire"] = kind_query) -> Response:
        return await sample(kind)

    @app.get("/model/info", responses={200: {"model": schemas.ModelInfo}, 503: errors_doc[503]})
    async def model_info() -> Response:
        model = server.primary.model
        if model is None:
            raise NoModelError(server.primary.error or "loading")
        recorded = model.metadata.get("metrics", {})

        def metric(*names: str) -> float | None:
            for name in names:
                value = recorded.get(name)
                if isinstance(value, int | float):
                    return float(value)
            return None  # not recorded: say so rather than invent a zero

        shadow = server.shadow
        return _json({
            "model_name": model.name,
            "model_type": model.model_type,
            "model_version": model.version,
            "feature_columns": [CANONICAL_TO_KAGGLE[m] for m in MEASUREMENTS],
            "model_features": model.feature_names,
            "threshold": model.threshold,
            "training_timestamp": model.metadata.get("created_at"),
            "model_metrics": {"accuracy": metric("accuracy"), "precision": metric("precision"),
                              "recall": metric("recall"), "f1_score": metric("f1_score", "f1"),
                              "roc_auc": metric("roc_auc"), "pr_auc": metric("pr_auc")},
            "params": model.metadata.get("params", {}),
            "variants": server.describe(),
            "shadow": ({"ref": shadow.ref, "model_version": shadow.model.version if shadow.model else None,
                        "error": shadow.error} if shadow else None),
        })

    @app.post("/validate", response_model=schemas.ValidateResponse, responses={400: errors_doc[400],
                                                                               413: errors_doc[413]},
              openapi_extra=reading_body)
    async def validate(request: Request) -> Response:
        doc = await read_json(request)
        batch = validate_records([doc], require_identity=False)
        problems = batch.rejected.get(0, [])
        if problems:
            metrics.rejected([p.reason for p in problems])
        warnings: list[str] = []
        if isinstance(doc, dict):
            for key in doc:
                if key.upper() in LEAKY_COLUMNS:
                    warnings.append(f"{key!r} is ignored: it leaks the label in the Kaggle data")
                elif key not in _KNOWN_KEYS:
                    warnings.append(f"unknown field {key!r} is ignored")
            if len(server.slots) > 1 and doc.get(SENSOR_ID) is None:
                warnings.append("no sensor_id: the A/B variant is drawn at random instead of sticky per sensor")
        return _json({"valid": not problems, "errors": [_field_error(p) for p in problems], "warnings": warnings})

    @app.post("/model/reload", responses={200: {"model": schemas.ReloadResponse}, 503: errors_doc[503]})
    async def reload() -> Response:
        switched = await asyncio.to_thread(server.refresh)
        if not server.loaded:
            raise NoModelError(server.primary.error or "nothing to load")
        return _json({"status": "reloaded", "model_version": server.primary.model.version,
                      "switched": switched, "variants": server.describe()})

    @app.get("/predictions/stats", response_model=schemas.StatsResponse)
    async def stats() -> Response:
        return _json({**metrics.snapshot(), "variants": server.describe()})

    # Order matters: the guard runs inside CORS so that 401/429 answers still carry CORS headers.
    if settings.api_keys or settings.rate_limit_per_minute:
        limiter = (RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
                   if settings.rate_limit_per_minute else None)
        app.add_middleware(ApiGuard, api_keys=settings.api_keys, limiter=limiter)
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
