"""The models a replica serves: loading from the registry, hot reload, A/B variants, shadow, scoring.

A replica holds one :class:`LoadedModel` per variant (and one for the shadow),
each followed by a :class:`train.model_watch.ModelWatch` (the one hot-reload
mechanism, shared with the stream workers): a variant whose reference is
``production`` follows the registry alias, and when it names another version
that version is loaded completely first and only then swapped in. A request that
started scoring keeps the model object it took, so no request sees a half-loaded
model or fails during the switch.

Features come from :func:`train.features.point_features`, the one
implementation shared with the stream and training: a single HTTP reading has
no history, so served models must use point features only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ingest.settings import ServeSettings, ServeVariant
from serve.ab import ABSplit
from serve.metrics import ServeMetrics
from train.drift import DriftReference
from train.features import POINT_FEATURES, needs_history, point_features
from train.model_watch import ModelWatch
from train.registry import PRODUCTION, LoadedModel, ModelRegistry, RegistryError

logger = logging.getLogger(__name__)

# Drift is measured on the most recent rows the primary variant scored; fewer rows than the
# minimum give PSI values dominated by sampling noise, so none are reported then.
DRIFT_WINDOW_ROWS = 5_000
DRIFT_MIN_ROWS = 200


class NoModelError(RuntimeError):
    """No model is loaded for a variant (nothing promoted yet, or the load failed)."""


@dataclass
class Slot:
    """A variant: its share, the watch on its registry reference, and what serves it now."""

    name: str
    weight: float
    watch: ModelWatch
    # The model and its features as columns of point_features(), swapped as one: a scorer takes both.
    serving: tuple[LoadedModel, np.ndarray] | None = None

    @property
    def ref(self) -> str:
        return self.watch.ref

    @property
    def model(self) -> LoadedModel | None:
        return self.serving[0] if self.serving else None

    @property
    def error(self) -> str | None:
        """Why the reference cannot be followed now (the previous model, if any, still serves)."""
        return self.watch.error


@dataclass
class Scored:
    """Predictions for a batch of readings, in input order."""

    probability: np.ndarray
    prediction: np.ndarray  # 0/1 at each variant's model threshold
    threshold: np.ndarray
    variant: list[str]
    version: list[str]
    shadow: np.ndarray | None = None  # shadow probabilities (never returned to clients)
    groups: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # variant -> (version, fire, no_fire)


def columns_for(model: LoadedModel) -> np.ndarray:
    missing = needs_history(model.feature_names)
    if missing:
        raise RegistryError(
            f"{model.name}:{model.version} needs windowed features ({', '.join(missing[:3])} ...) that a single "
            "HTTP reading cannot provide; serve a model trained on POINT_FEATURES")
    return np.array([POINT_FEATURES.index(n) for n in model.feature_names], dtype=np.int64)


class ModelServer:
    """Variants, shadow and hot reload of one replica."""

    def __init__(self, registry_dir: str, model_name: str, settings: ServeSettings) -> None:
        self.registry = ModelRegistry(registry_dir, model_name)
        variants = settings.variants or [ServeVariant(name="production", ref=PRODUCTION, weight=1.0)]

        def slot(name: str, ref: str, weight: float) -> Slot:
            return Slot(name, weight, ModelWatch(self.registry, ref=ref, accept=columns_for))

        self.slots = [slot(v.name, v.ref, v.weight) for v in variants]
        self.split = ABSplit([s.name for s in self.slots], [s.weight for s in self.slots])
        self.shadow = slot("shadow", settings.shadow, 0.0) if settings.shadow else None
        self._load_lock = threading.Lock()  # one loader at a time (poller and /model/reload)
        self.last_refresh = time.monotonic()  # end of the last refresh, for the replica health check
        self.on_swap = None  # callback(old_version | None, new_version), for the version gauge
        # Recent feature rows of the primary variant (its model's columns), for drift against training.
        self._recent: deque[np.ndarray] = deque()
        self._recent_rows = 0
        self._drift_reference: tuple[str, DriftReference | None] | None = None  # (version, reference)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def all_slots(self) -> list[Slot]:
        return [*self.slots, self.shadow] if self.shadow else list(self.slots)

    def refresh(self) -> list[str]:
        """Load every slot whose reference now names another version; returns the slots that switched.

        Blocking (file reads and model parsing): call it from a thread, not the event loop.
        A failed load keeps the previous model serving (its watch logs the cause once).
        """
        switched: list[str] = []
        with self._load_lock:
            for slot in self.all_slots:
                old = slot.model.version if slot.model else None
                if not slot.watch.refresh():
                    continue
                model = slot.watch.model
                slot.serving = (model, columns_for(model))
                if slot is self.slots[0]:
                    self._recent.clear()
                    self._recent_rows = 0
                switched.append(slot.name)
                if self.on_swap is not None:
                    self.on_swap(old, model.version)
        self.last_refresh = time.monotonic()
        return switched

    @property
    def loaded(self) -> bool:
        return all(s.model is not None for s in self.slots)

    @property
    def primary(self) -> Slot:
        """The first variant (the one ``/model/info`` describes)."""
        return self.slots[0]

    # -- scoring -------------------------------------------------------------------------------

    def score(self, values: np.ndarray, sensor_ids: Sequence[str | None]) -> Scored:
        """Measurements ``(n, 12)`` in MEASUREMENTS order -> probabilities, one model call per variant."""
        n = len(values)
        features = point_features(values)
        assignment = self.split.assign(sensor_ids)
        probability = np.empty(n)
        prediction = np.empty(n, dtype=np.int64)
        threshold = np.empty(n)
        variant: list[str] = [""] * n
        version: list[str] = [""] * n
        groups: dict[str, tuple[str, int, int]] = {}
        for k, slot in enumerate(self.slots):
            rows = np.flatnonzero(assignment == k) if len(self.slots) > 1 else np.arange(n)
            if not len(rows):
                continue
            serving = slot.serving  # take both once: a swap may happen meanwhile
            if serving is None:
                raise NoModelError(f"variant {slot.name}: no model loaded ({slot.error or 'loading'})")
            model, columns = serving
            x = features[rows][:, columns]
            p = model.predict_proba(x)
            if k == 0:
                self._remember(x)
            y = (p >= model.threshold).astype(np.int64)
            probability[rows] = p
            prediction[rows] = y
            threshold[rows] = model.threshold
            for i in rows.tolist():
                variant[i] = slot.name
                version[i] = model.version
            fire = int(y.sum())
            groups[slot.name] = (model.version, fire, len(rows) - fire)
        shadow = None
        if self.shadow is not None and self.shadow.serving is not None:
            model, columns = self.shadow.serving
            try:
                shadow = model.predict_proba(features[:, columns])
                fire = int((shadow >= model.threshold).sum())
                groups["shadow"] = (model.version, fire, n - fire)
            except Exception as err:  # the shadow must never fail a request
                logger.error("shadow %s failed, ignored: %s", model.version, err)
        return Scored(probability, prediction, threshold, variant, version, shadow, groups)

    def _remember(self, x: np.ndarray) -> None:
        self._recent.append(x)
        self._recent_rows += len(x)
        while self._recent_rows - len(self._recent[0]) >= DRIFT_WINDOW_ROWS:
            self._recent_rows -= len(self._recent.popleft())

    def drift(self) -> dict[str, float]:
        """PSI per feature of the primary variant's recent inputs against its training data.

        Empty when too few rows were scored since the model was loaded, or when the model
        version has no stored reference (then one line is logged, once per version).
        """
        model = self.primary.model
        if model is None or self._recent_rows < DRIFT_MIN_ROWS:
            return {}
        if self._drift_reference is None or self._drift_reference[0] != model.version:
            try:
                reference = model.drift_reference()
            except Exception as err:  # an old version without a reference: no drift, not an outage
                logger.warning("model %s has no drift reference, PSI not reported: %s", model.version, err)
                reference = None
            self._drift_reference = (model.version, reference)
        reference = self._drift_reference[1]
        recent = np.vstack(list(self._recent))
        if reference is None or recent.shape[1] != len(reference.feature_names):
            return {}
        return reference.psi(recent)

    def describe(self) -> list[dict]:
        return [{"name": s.name, "ref": s.ref, "weight": float(share),
                 "model_version": s.model.version if s.model else None, "error": s.error}
                for s, share in zip(self.slots, self.split.shares, strict=True)]


# Scoring for the routes -----------------------------------------------------------------------------


def score_and_count(server: ModelServer, metrics: ServeMetrics, values: np.ndarray,
                    sensor_ids: Sequence[str | None]) -> Scored:
    """Score a batch and count it per variant (and shadow agreement): one model call per variant."""
    scored = server.score(values, sensor_ids)
    for variant, (version, fire, no_fire) in scored.groups.items():
        metrics.predicted(variant, version, fire, no_fire)
    if scored.shadow is not None:
        shadow_threshold = server.shadow.model.threshold if server.shadow and server.shadow.model else 0.5
        agree = int(((scored.shadow >= shadow_threshold).astype(np.int64) == scored.prediction).sum())
        metrics.shadow(agree, len(values))
    return scored


def prediction_fields(scored: Scored, i: int) -> dict[str, object]:
    """The prediction of row ``i``: the fields ``PredictResponse`` and ``BatchItem`` share."""
    p = float(scored.probability[i])
    y = int(scored.prediction[i])
    return {"prediction": y, "prediction_label": "fire" if y else "no_fire", "probability": p,
            "confidence": {"fire": p, "no_fire": 1.0 - p}, "threshold": float(scored.threshold[i]),
            "model_version": scored.version[i], "variant": scored.variant[i]}


def score_one(server: ModelServer, metrics: ServeMetrics, values: np.ndarray,
              sensor_id: str | None) -> dict[str, object]:
    """Score one reading on its own: a model call of one row."""
    metrics.predict_call(1, batched=False)
    return prediction_fields(score_and_count(server, metrics, values[None, :], [sensor_id]), 0)
