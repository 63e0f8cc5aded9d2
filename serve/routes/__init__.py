"""The API's routes, one router per concern; :func:`serve.api.create_api` includes them all.

Each route reaches the models, counters and settings through the app's backend
(:func:`backend_of`), set by ``create_api``: the same routes run in a Serve
replica and under plain uvicorn (``bench/serve.py``).

- ``predict``: ``POST /predict``, ``POST /predict/batch``, ``GET|POST /predict/sample``,
  ``GET /predict/fire-scenario``
- ``model_info``: ``GET /model/info``, ``POST /model/reload``
- ``validate``: ``POST /validate``
- ``health``: ``GET /health``
- ``stats``: ``GET /predictions/stats``, ``GET /metrics``
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fastapi import Request

from ingest.validation import format_timestamp

if TYPE_CHECKING:
    from serve.backend import Backend


def backend_of(request: Request) -> Backend:
    return request.app.state.backend


def now() -> str:
    """The response time stamp: RFC 3339 UTC with milliseconds."""
    return format_timestamp(time.time())
