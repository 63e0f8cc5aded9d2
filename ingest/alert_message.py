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
>>> AlertEvent.from_message(a.to_message()) == a
True
>>> AlertEvent.from_message(b'{"alert_id": "x"}')
Traceback (most recent call last):
...
ingest.alert_message.MalformedAlert: missing_field: sensor_id
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from ingest.validation import format_timestamp

RAISED, CLEARED = "raised", "cleared"
STATES = (RAISED, CLEARED)
FIRE, STUCK, SILENT = "fire", "sensor_stuck", "sensor_silent"
CRITICAL, WARNING, INFO = "critical", "warning", "info"


def alert_id(sensor_id: str, kind: str, incident_start: float) -> str:
    """Deterministic id of an incident: the same input always gives the same id."""
    key = f"{sensor_id}\x1f{kind}\x1f{incident_start:.3f}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


class MalformedAlert(ValueError):
    """A message on the alerts topic that is not an alert event; ``reason`` is a short code for the DLQ."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


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

    @classmethod
    def from_message(cls, value: bytes | None) -> AlertEvent:
        """The event of a message written by :meth:`to_message`; :class:`MalformedAlert` says what is wrong."""
        if value is None:
            raise MalformedAlert("empty", "the message has no value")
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as err:
            raise MalformedAlert("not_json", str(err)) from None
        if not isinstance(doc, dict):
            raise MalformedAlert("not_an_object", type(doc).__name__)
        for name in ("alert_id", "sensor_id", "kind", "severity", "state"):
            if not isinstance(doc.get(name), str) or not doc[name]:
                raise MalformedAlert("missing_field", name)
        if doc["state"] not in STATES:
            raise MalformedAlert("bad_state", doc["state"])
        times = {}
        for name in ("event_time_epoch", "detected_at_epoch"):
            value = doc.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise MalformedAlert("missing_field", name)
            times[name] = float(value)
        score = doc.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
            raise MalformedAlert("bad_score", repr(score))
        evidence = doc.get("evidence") or {}
        if not isinstance(evidence, dict):
            raise MalformedAlert("bad_evidence", type(evidence).__name__)
        model = doc.get("model_version")
        return cls(doc["alert_id"], doc["sensor_id"], doc["kind"], doc["severity"], doc["state"],
                   times["event_time_epoch"], times["detected_at_epoch"],
                   float("nan") if score is None else float(score), model if isinstance(model, str) else None,
                   evidence)


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
