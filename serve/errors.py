"""HTTP errors of the API: one body shape (:class:`serve.schemas.ErrorResponse`) for every 4xx and 5xx.

Routes raise :class:`ApiError` (or :func:`invalid_reading` for readings that fail
validation); :func:`install_error_handlers` turns it, FastAPI's own query
validation errors, Starlette's HTTP errors (404, 405) and anything unexpected
into that one shape, so a client reads ``error`` and ``errors[].field`` whatever
went wrong.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ingest.schema import FIELD_BY_NAME
from ingest.validation import Problem
from serve import schemas
from serve.model import NoModelError

logger = logging.getLogger(__name__)

JSON = "application/json"


class ApiError(Exception):
    """An HTTP error with the body of :class:`serve.schemas.ErrorResponse`."""

    def __init__(self, status: int, message: str, errors: list[schemas.FieldError] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors or [], headers


def request_error(status: int, field: str | None, reason: str, detail: str, message: str | None = None) -> ApiError:
    """An error about one field of the request (or the whole body when ``field`` is None).

    >>> err = request_error(413, "data", "too_large", "20001 > 10000 readings")
    >>> err.status, err.message, err.errors[0].field
    (413, 'data: too_large (20001 > 10000 readings)', 'data')
    """
    return ApiError(status, message or f"{field or 'body'}: {reason} ({detail})",
                    [schemas.FieldError(field=field, reason=reason, detail=detail)])


def field_error(problem: Problem) -> schemas.FieldError:
    """A validation problem of a reading, with the other accepted spellings of its field."""
    spec = FIELD_BY_NAME.get(problem.field or "")
    return schemas.FieldError(field=problem.field, reason=problem.reason, detail=problem.detail,
                              aliases=[spec.seed, spec.kaggle] if spec else [])


def summary(problems: list[Problem]) -> str:
    """One line naming the first problems of a reading."""
    parts = [f"{p.field or 'reading'}: {p.reason} ({p.detail})" for p in problems[:4]]
    more = f" and {len(problems) - 4} more" if len(problems) > 4 else ""
    return "invalid reading: " + "; ".join(parts) + more


def invalid_reading(problems: list[Problem]) -> ApiError:
    return ApiError(422, summary(problems), [field_error(p) for p in problems])


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``body`` (a schema model, or plain data where the schema is checked by tests) as a JSON response."""
    content = (body.__pydantic_serializer__.to_json(body) if isinstance(body, BaseModel)
               else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
    return Response(content, status_code=status, media_type=JSON, headers=headers)


def error_response(status: int, message: str, errors: list[schemas.FieldError] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    return json_response(schemas.ErrorResponse(error=message, status_code=status, errors=errors or []), status,
                         headers)


def install_error_handlers(app: FastAPI, retry_after_s: float) -> None:
    """Answer every error in the :class:`serve.schemas.ErrorResponse` shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError) -> Response:
        return error_response(err.status, err.message, err.errors, err.headers)

    @app.exception_handler(NoModelError)
    async def _no_model(_: Request, err: NoModelError) -> Response:
        return error_response(503, f"no model available: {err}", headers={"Retry-After": str(max(1, round(
            retry_after_s)))})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> Response:
        return error_response(err.status_code, str(err.detail), headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _query_error(_: Request, err: RequestValidationError) -> Response:
        errors = [schemas.FieldError(field=".".join(str(x) for x in e["loc"][1:]) or None, reason=e["type"],
                                     detail=e["msg"]) for e in err.errors()]
        first = errors[0] if errors else schemas.FieldError(field=None, reason="invalid", detail="invalid request")
        return error_response(422, f"{first.field}: {first.detail}", errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> Response:
        logger.error("%s %s failed: %s: %s", request.method, request.url.path, type(err).__name__, err)
        return error_response(500, f"internal error: {type(err).__name__}")
