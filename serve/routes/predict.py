"""Scoring routes: one reading (``POST /predict``), a batch (``POST /predict/batch``), a reference sample.

``/predict`` goes through the backend's ``predict_one`` (``@serve.batch`` in Serve
when other requests are in flight); ``/predict/batch`` scores its valid readings in
one vectorised call per variant and answers the invalid ones with their errors, in
input order.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from serve import schemas
from serve.errors import field_error, json_response, summary
from serve.model import prediction_fields, score_and_count
from serve.parsing import read_json, readings_of_batch, validate_batch, validate_one, without_naive_time
from serve.routes import backend_of, now

router = APIRouter()

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
_READING_BODY = {"requestBody": {"required": True, "content": {_JSON: {"schema": schemas.reading_schema()}}}}
_BATCH_BODY = {"requestBody": {"required": True, "content": {_JSON: {"schema": {"oneOf": [
    {"type": "object", "required": ["data"],
     "properties": {"data": {"type": "array", "items": schemas.reading_schema()}}},
    {"type": "array", "items": schemas.reading_schema()},
]}}}}}
ERRORS_DOC: dict[int | str, dict[str, Any]] = {
    400: {"model": schemas.ErrorResponse, "description": "malformed JSON"},
    413: {"model": schemas.ErrorResponse, "description": "body or batch too large"},
    422: {"model": schemas.ErrorResponse, "description": "invalid field (named in the body)"},
    503: {"model": schemas.ErrorResponse, "description": "no model loaded yet"},
}


@router.post("/predict", responses={200: {"model": schemas.PredictResponse}, **ERRORS_DOC},
             openapi_extra=_READING_BODY)
async def predict(request: Request) -> Response:
    backend = backend_of(request)
    started = time.perf_counter()
    doc, warnings = without_naive_time(await read_json(request, backend.settings.max_body_bytes, backend.metrics))
    values, sensor_id = validate_one(doc, backend.metrics)
    result = await backend.predict_one(values, sensor_id)
    elapsed = time.perf_counter() - started
    backend.metrics.latency(elapsed, [result["variant"]])
    return json_response(schemas.PredictResponse(**result, processing_time_seconds=elapsed, timestamp=now(),
                                                 warnings=warnings))


@router.post("/predict/batch", responses={200: {"model": schemas.BatchResponse}, **ERRORS_DOC},
             openapi_extra=_BATCH_BODY)
async def predict_batch(request: Request) -> Response:
    backend = backend_of(request)
    metrics = backend.metrics
    started = time.perf_counter()
    readings = readings_of_batch(await read_json(request, backend.settings.max_body_bytes, metrics),
                                 backend.settings.max_batch_rows, metrics)
    lenient = [without_naive_time(reading) for reading in readings]
    readings, warnings = [doc for doc, _ in lenient], [warned for _, warned in lenient]
    batch = validate_batch(readings, metrics)
    # Built as plain dicts: validating 10,000 items through the schema would double the request's
    # cost (docs/serving.md); tests check these bodies against schemas.BatchResponse.
    results: list[dict[str, Any]] = [{} for _ in readings]
    for i, problems in batch.rejected.items():
        results[i] = {"index": i, "error": summary(problems),
                      "errors": [field_error(p).model_dump() for p in problems]}
    fire = 0
    variants: list[str] = []
    if len(batch):
        scored = score_and_count(backend.server, metrics, batch.values, batch.sensor_ids)
        fire = int(scored.prediction.sum())
        variants = list(scored.groups.keys() - {"shadow"})
        for k, i in enumerate(batch.index.tolist()):
            results[i] = {"index": i, **prediction_fields(scored, k)}
    for i, warned in enumerate(warnings):
        if warned:
            results[i]["warnings"] = warned
    elapsed = time.perf_counter() - started
    metrics.latency(elapsed, variants or ["none"])
    return json_response({
        "predictions": results,
        "summary": {"total_samples": len(readings), "successful_predictions": len(batch),
                    "fire_detections": fire, "no_fire_detections": len(batch) - fire,
                    "errors": len(batch.rejected)},
        "processing_time_seconds": elapsed,
        "timestamp": now(),
    })


# 422 documented as ours: otherwise FastAPI documents its own HTTPValidationError shape, which
# the error handlers never send.
_SAMPLE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"model": schemas.SampleResponse},
    422: {"model": schemas.ErrorResponse, "description": "invalid query value (named in the body)"},
    503: ERRORS_DOC[503]}
_KIND = Query("normal", description="which reference reading to score")


async def _sample(request: Request, kind: Literal["normal", "fire"]) -> Response:
    backend = backend_of(request)
    started = time.perf_counter()
    reading = SAMPLES[kind]
    values, sensor_id = validate_one(reading, backend.metrics)
    result = await backend.predict_one(values, sensor_id)
    elapsed = time.perf_counter() - started
    backend.metrics.latency(elapsed, [result["variant"]])
    return json_response(schemas.SampleResponse(**result, processing_time_seconds=elapsed, timestamp=now(),
                                                sample_kind=kind, sample_data=reading))


@router.post("/predict/sample", responses=_SAMPLE_DOC)
async def predict_sample_post(request: Request, kind: Literal["normal", "fire"] = _KIND) -> Response:
    return await _sample(request, kind)


@router.get("/predict/sample", responses=_SAMPLE_DOC)
async def predict_sample_get(request: Request, kind: Literal["normal", "fire"] = _KIND) -> Response:
    return await _sample(request, kind)


@router.get("/predict/fire-scenario", responses=_SAMPLE_DOC)
async def predict_fire_scenario(request: Request) -> Response:
    """The original project's name for ``/predict/sample?kind=fire``."""
    return await _sample(request, "fire")
