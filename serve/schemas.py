"""Request and response models of the HTTP API: the OpenAPI schema, and the bodies the routes send.

Requests are *not* parsed through these models: every reading goes through
:func:`ingest.validation.validate_records`, the one validation of the project,
which accepts canonical, seed (``Temperature``) and Kaggle (``Temperature[C]``)
names and reports every problem with its field and reason. The request models
here describe that contract for clients and generated SDKs.

Responses are built as these models (a few microseconds each), so what the
OpenAPI schema says is what is sent. The one exception is the list of
``/predict/batch`` items, built as plain dicts because validating 10,000 of them
would double the request's cost; tests check those bodies against
:class:`BatchResponse`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ingest.schema import FIELDS

# One optional property per measurement, named canonically, with the other spellings
# and the plausible range in its description.
SensorReading: type[BaseModel] = create_model(
    "SensorReading",
    __config__=ConfigDict(extra="allow", title="SensorReading"),
    __doc__=("One reading. Every measurement is required (a missing one is 422, never zero); each may be "
             "spelled canonically, as in the seed API or as in the Kaggle CSV header. Unknown keys are ignored."),
    sensor_id=(str | None, Field(None, description="routes the reading to its A/B variant (sticky)",
                                  examples=["kitchen-3"])),
    timestamp=(float | str | None, Field(None, description="RFC 3339 with offset, or epoch seconds")),
    **{f.name: (float | None, Field(None, ge=f.low, le=f.high, json_schema_extra={"aliases": [f.seed, f.kaggle]},
                                     description=f"{f.description} [{f.unit}], {f.low:g}..{f.high:g}; "
                                                 f"also '{f.seed}' or '{f.kaggle}'"))
       for f in FIELDS},
)


class BatchRequest(BaseModel):
    """A batch: ``{"data": [reading, ...]}``; a bare JSON list of readings is accepted too."""

    data: list[SensorReading]  # type: ignore[valid-type]


class FieldError(BaseModel):
    field: str | None = Field(description="canonical field name; null for the whole reading")
    reason: str = Field(description="machine-readable reason (ingest.schema.Reason)")
    detail: str
    aliases: list[str] = Field([], description="other accepted spellings of the field")


class ErrorResponse(BaseModel):
    error: str = Field(description="one line naming the first offending field")
    status_code: int
    errors: list[FieldError] = []


class Confidence(BaseModel):
    fire: float = Field(description="the probability of fire (same as `probability`)")
    no_fire: float = Field(description="1 - probability")


PROBABILITY = ("P(fire): the model's probability that the reading is a fire, whatever the prediction "
               "(a prediction of 0 comes with a low probability, not with the probability of 'no fire')")


class PredictResponse(BaseModel):
    prediction: Literal[0, 1] = Field(description="1 when probability >= threshold")
    prediction_label: Literal["fire", "no_fire"]
    probability: float = Field(ge=0, le=1, description=PROBABILITY)
    confidence: Confidence
    threshold: float = Field(description="decision threshold of the model that scored")
    model_version: str
    variant: str = Field(description="A/B variant that scored this reading")
    processing_time_seconds: float
    timestamp: str = Field(description="when the response was made (RFC 3339 UTC)")
    warnings: list[str] = Field([], description="what of the request was ignored, e.g. a timestamp without "
                                                "a UTC offset")


class BatchItem(BaseModel):
    index: int
    prediction: Literal[0, 1] | None = None
    prediction_label: Literal["fire", "no_fire"] | None = None
    probability: float | None = Field(None, description=PROBABILITY)
    confidence: Confidence | None = None
    threshold: float | None = None
    model_version: str | None = None
    variant: str | None = None
    error: str | None = Field(None, description="set instead of a prediction when the item is invalid")
    errors: list[FieldError] | None = None
    warnings: list[str] | None = Field(None, description="what of the item was ignored")


class BatchSummary(BaseModel):
    total_samples: int
    successful_predictions: int
    fire_detections: int
    no_fire_detections: int
    errors: int


class BatchResponse(BaseModel):
    predictions: list[BatchItem]
    summary: BatchSummary
    processing_time_seconds: float
    timestamp: str


class SampleResponse(PredictResponse):
    sample_kind: Literal["normal", "fire"]
    sample_data: dict[str, float] = Field(description="the reading scored, under its seed names")


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded"]
    timestamp: str
    version: str = Field(description="version of this service")
    model_loaded: bool
    model_version: str | None
    uptime_seconds: float
    variants: list[dict[str, Any]]


class ModelMetrics(BaseModel):
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1_score: float | None
    roc_auc: float | None
    pr_auc: float | None = None


class ModelInfo(BaseModel):
    model_name: str
    model_type: str
    model_version: str
    feature_columns: list[str] = Field(description="input fields under their Kaggle names")
    features: list[str] = Field(description="the same as feature_columns (the original project's key)")
    model_features: list[str] = Field(description="features the model consumes (train.features names)")
    threshold: float
    training_timestamp: str | None
    model_metrics: ModelMetrics
    accuracy: float | None = Field(description="the same as model_metrics.accuracy (the original project's key)")
    params: dict[str, Any] = {}
    variants: list[dict[str, Any]]
    shadow: dict[str, Any] | None = None


class ValidateResponse(BaseModel):
    valid: bool
    errors: list[FieldError]
    warnings: list[str]


class ReloadResponse(BaseModel):
    status: Literal["reloaded"]
    model_version: str | None
    switched: list[str] = Field(description="variants that changed version on this replica")
    variants: list[dict[str, Any]]


class StatsResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    scope: Literal["replica"]
    uptime_seconds: float
    total_requests: int
    total_predictions: int
    fire_predictions: int
    no_fire_predictions: int
    fire_rate: float | None
    validation_failures: dict[str, int]
    by_variant: dict[str, dict[str, Any]]
    shadow: dict[str, Any] | None
    latency_seconds: dict[str, float | int | None]
    # /predict readings, the model calls that scored them, how many were @serve.batch batches, the largest
    predict_batching: dict[str, int]
    variants: list[dict[str, Any]]


def reading_schema() -> dict[str, Any]:
    """JSON schema of one reading, self-contained (for ``openapi_extra``)."""
    return SensorReading.model_json_schema()
