"""What the routes need from whoever serves them: the models, the counters, the settings, a scorer.

In Ray Serve the backend is the ``SmokeDetector`` deployment itself (``serve.app``),
whose ``predict_one`` goes through ``@serve.batch`` when other requests are in
flight; ``bench/serve.py`` runs the very same routes under plain uvicorn with
:class:`DirectBackend`, so the benchmark measures what Serve adds and nothing else.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ingest.settings import ServeSettings
from serve.metrics import ServeMetrics
from serve.model import ModelServer, score_one


class Backend(Protocol):
    server: ModelServer
    metrics: ServeMetrics
    settings: ServeSettings

    async def predict_one(self, values: np.ndarray, sensor_id: str | None) -> dict[str, Any]: ...


class DirectBackend:
    """Scores each request as it comes (no Serve, no batching): the uvicorn baseline and unit use."""

    def __init__(self, server: ModelServer, metrics: ServeMetrics, settings: ServeSettings) -> None:
        self.server, self.metrics, self.settings = server, metrics, settings

    async def predict_one(self, values: np.ndarray, sensor_id: str | None) -> dict[str, Any]:
        return score_one(self.server, self.metrics, values, sensor_id)
