"""The alert message (topic ``smoke_alerts``, key = sensor_id) and its deterministic id.

An incident gives exactly two messages: ``raised`` and ``cleared``, with the
same ``alert_id``. The id is a hash of (sensor, kind, event time of the
incident's first anomalous reading), so reprocessing the same readings after a
crash produces the same ids and consumers (and the worker's own duplicate
suppression) can drop repeats.

>>> a = AlertEvent(alert_id=alert_id("s1", "fire", 1700000000.0), sensor_id="s1", kind="fire",
...     severity="critical", state="raised", event_time=1700000003.0, detected_at=1700000003.2, score=2.5,
...     model_version=None, evidence={"channels": ["particles", "heat"]})
>>> a.alert_id == alert_id("s1", "fire", 1700000000.0), len(a.alert_id)
(True, 32)
>>> import orjson; doc = orjson.loads(a.to_message()); doc["event_time"], doc["event_time_epoch"]
('2023-11-14T22:13:23.000Z', 1700000003.0)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from ingest.validation import format_timestamp

RAISED, CLEARED = "raised", "cleared"
FIRE, STUCK, SILENT = "fire", "sensor_stuck", "sensor_silent"
CRITICAL, WARNING, INFO = "critical", "warning", "info"


def alert_id(sensor_id: str, kind: str, incident_start: float) -> str:
    """Deterministic id of an incident: the same input always gives the same id."""
    key = f"{sensor_id}\x1f{kind}\x1f{incident_start:.3f}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


@dataclass(frozen=True)
class AlertEvent:
    """One raised or cleared alert; times are epoch seconds (RFC 3339 on the wire as well)."""

    alert_id: str
    sensor_id: str
    kind: str  # "fire" | "sensor_stuck" | "sensor_silent"
    severity: str  # "critical" | "warning" | "info"
    state: str  # "raised" | "cleared"
    event_time: float  # event time of the reading that completed the evidence
    detected_at: float  # wall clock when the engine emitted it
    score: float
    model_version: str | None
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "sensor_id": self.sensor_id,
            "kind": self.kind,
            "severity": self.severity,
            "state": self.state,
            "event_time": format_timestamp(self.event_time),
            "event_time_epoch": self.event_time,
            "detected_at": format_timestamp(self.detected_at),
            "detected_at_epoch": self.detected_at,
            "score": _finite_or_none(self.score),
            "model_version": self.model_version,
            "evidence": _json_safe(self.evidence),
        }

    def to_message(self) -> bytes:
        """The Kafka message value: JSON (NaN in evidence becomes null, never a bare NaN token)."""
        return orjson.dumps(self.to_dict())


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return _finite_or_none(value)
    return value
