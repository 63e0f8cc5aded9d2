"""The model a replica serves: ``GET /model/info`` and ``POST /model/reload`` (pick up a promotion now)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ingest.schema import CANONICAL_TO_KAGGLE, MEASUREMENTS
from serve import schemas
from serve.errors import json_response
from serve.model import NoModelError
from serve.routes import backend_of
from serve.routes.predict import ERRORS_DOC

router = APIRouter()

# The input fields under their Kaggle names, as the original project listed them.
INPUT_FIELDS = [CANONICAL_TO_KAGGLE[m] for m in MEASUREMENTS]


@router.get("/model/info", responses={200: {"model": schemas.ModelInfo}, 503: ERRORS_DOC[503]})
async def model_info(request: Request) -> Response:
    server = backend_of(request).server
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

    metrics = schemas.ModelMetrics(accuracy=metric("accuracy"), precision=metric("precision"),
                                   recall=metric("recall"), f1_score=metric("f1_score", "f1"),
                                   roc_auc=metric("roc_auc"), pr_auc=metric("pr_auc"))
    shadow = server.shadow
    return json_response(schemas.ModelInfo(
        model_name=model.name,
        model_type=model.model_type,
        model_version=model.version,
        feature_columns=INPUT_FIELDS,
        features=INPUT_FIELDS,
        model_features=model.feature_names,
        threshold=model.threshold,
        training_timestamp=model.metadata.get("created_at"),
        model_metrics=metrics,
        accuracy=metrics.accuracy,
        params=model.metadata.get("params", {}),
        variants=server.describe(),
        shadow=({"ref": shadow.ref, "model_version": shadow.model.version if shadow.model else None,
                 "error": shadow.error} if shadow else None),
    ))


@router.post("/model/reload", responses={200: {"model": schemas.ReloadResponse}, 503: ERRORS_DOC[503]})
async def reload(request: Request) -> Response:
    server = backend_of(request).server
    switched = await asyncio.to_thread(server.refresh)
    if not server.loaded:
        raise NoModelError(server.primary.error or "nothing to load")
    return json_response(schemas.ReloadResponse(status="reloaded", model_version=server.primary.model.version,
                                                switched=switched, variants=server.describe()))
