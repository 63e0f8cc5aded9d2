"""Feature drift: reference distributions stored with each model, PSI of recent data against them.

The reference holds, per feature, the edges of quantile bins of the training data
and the share of training rows in each bin, plus the share of missing values
(NaN: a ratio with a zero denominator, or no history yet). Recent data is binned
with the same edges; the population stability index per feature is

    PSI = sum over bins of (recent_share - reference_share) * ln(recent_share / reference_share)

with shares floored at ``EPSILON`` so an empty bin does not give infinity. A
missing-value bin is part of the sum: a sensor that starts sending NaN drifts.
Common reading: below 0.1 stable, 0.1-0.25 moderate shift, above 0.25 large shift.

>>> rng = np.random.default_rng(0)
>>> ref = DriftReference.fit(rng.normal(size=(5000, 1)), ["temperature_c"])
>>> round(ref.psi(rng.normal(size=(2000, 1)))["temperature_c"], 2) < 0.1
True
>>> ref.psi(rng.normal(loc=2.0, size=(2000, 1)))["temperature_c"] > 0.25
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from train.features import check_feature_names

EPSILON = 1e-4
DEFAULT_BINS = 10
FILE_NAME = "drift_reference.json"


@dataclass(frozen=True)
class FeatureReference:
    edges: list[float]  # inner bin edges; bins are (-inf, e0], (e0, e1], ..., (e_last, inf)
    shares: list[float]  # share of non-missing rows per bin (len(edges) + 1 entries)
    missing_share: float


@dataclass(frozen=True)
class DriftReference:
    """Per-feature quantile bins of the training data, in a model's feature order."""

    feature_names: list[str]
    features: dict[str, FeatureReference]
    rows: int

    @classmethod
    def fit(cls, x: np.ndarray, feature_names: list[str], bins: int = DEFAULT_BINS) -> DriftReference:
        x = np.asarray(x, dtype=np.float64)
        check_feature_names(feature_names)
        if x.ndim != 2 or x.shape[1] != len(feature_names):
            raise ValueError(f"expected shape (n, {len(feature_names)}), got {x.shape}")
        if len(x) == 0:
            raise ValueError("cannot build a drift reference from no rows")
        refs: dict[str, FeatureReference] = {}
        for j, name in enumerate(feature_names):
            col = x[:, j]
            present = col[np.isfinite(col)]
            # Unique quantiles: heavy ties (many zero particle counts) collapse bins rather than
            # creating empty ones.
            inner = np.linspace(0, 1, bins + 1)[1:-1]
            edges = np.unique(np.quantile(present, inner)) if len(present) else np.array([])
            counts = _bin_counts(present, edges)
            shares = counts / max(len(present), 1)
            refs[name] = FeatureReference(edges.tolist(), shares.tolist(), float(1 - len(present) / len(col)))
        return cls(list(feature_names), refs, len(x))

    def psi(self, x: np.ndarray) -> dict[str, float]:
        """PSI per feature of recent rows ``x`` (columns in ``feature_names`` order)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"expected shape (n, {len(self.feature_names)}) in the reference's feature order, "
                             f"got {x.shape}")
        if len(x) == 0:
            raise ValueError("PSI of no rows is undefined")
        out: dict[str, float] = {}
        for j, name in enumerate(self.feature_names):
            ref = self.features[name]
            col = x[:, j]
            present = col[np.isfinite(col)]
            recent_missing = 1 - len(present) / len(col)
            recent = _bin_counts(present, np.array(ref.edges)) / len(col)
            expected = np.array(ref.shares) * (1 - ref.missing_share)
            actual = np.r_[recent, recent_missing]
            expected = np.r_[expected, ref.missing_share]
            actual, expected = np.maximum(actual, EPSILON), np.maximum(expected, EPSILON)
            out[name] = float(np.sum((actual - expected) * np.log(actual / expected)))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "feature_names": self.feature_names,
            "rows": self.rows,
            "features": {k: {"edges": v.edges, "shares": v.shares, "missing_share": v.missing_share}
                         for k, v in self.features.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DriftReference:
        feats = {k: FeatureReference(v["edges"], v["shares"], v["missing_share"]) for k, v in data["features"].items()}
        return cls(list(data["feature_names"]), feats, int(data["rows"]))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json()))
        return path

    @classmethod
    def load(cls, path: str | Path) -> DriftReference:
        return cls.from_json(json.loads(Path(path).read_text()))


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # side="left": a value equal to an edge falls in the bin that edge closes, (e_{i-1}, e_i].
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1).astype(np.float64)
