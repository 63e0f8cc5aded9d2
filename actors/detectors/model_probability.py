"""The ML fire probability of the production model, as one channel of evidence.

The model (a :class:`train.registry.LoadedModel`) picks its own feature columns
from the shared feature matrix (``model.select``) and gives a probability of
fire; its ``threshold`` was chosen at training time (for the target recall).
Without a model the detector has no opinion (NaN), so the engine runs on its
rule-based detectors until a model is promoted, and switches on ``set_model``.

>>> import numpy as np
>>> class Constant:  # anything with select / predict_proba / threshold / version
...     version, threshold = "v0001", 0.5
...     def select(self, features): return features[:, :1]
...     def predict_proba(self, x): return np.full(len(x), 0.8)
>>> det = ModelProbability(Constant())
>>> det.score_batch(ReadingBatch(np.array([0]), np.zeros(1), np.zeros((1, 12)), np.zeros((1, 3)))).ratio.tolist()
[[1.6]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actors.detectors.base import Detector, ReadingBatch, Scores, ratio_of


class ModelProbability(Detector):
    """Fire probability / the model's threshold; stateless; NaN without a model."""

    name = "model"

    def __init__(self, model: Any | None = None, capacity: int = 64) -> None:
        super().__init__(capacity=capacity)
        self.model = model

    @property
    def version(self) -> str | None:
        return None if self.model is None else str(self.model.version)

    def score_batch(self, batch: ReadingBatch) -> Scores:
        n = len(batch)
        if self.model is None or n == 0:
            nan = np.full((n, 1), np.nan)
            return Scores(("fire_probability",), ("model",), nan, np.array([np.nan]), nan.copy())
        probability = np.asarray(self.model.predict_proba(self.model.select(batch.features)), dtype=np.float64)
        if probability.shape != (n,):
            raise ValueError(f"model {self.version} returned shape {probability.shape} for {n} rows")
        threshold = np.array([float(self.model.threshold)])
        observed = probability[:, None]
        return Scores(("fire_probability",), ("model",), observed, threshold, ratio_of(observed, threshold))
