"""What the alert store returns: frozen records of incidents, events, deliveries and KPIs.

Plain dataclasses (no database types leak out), so the operator API, the CLI and
the dispatcher depend on these names and not on the tables behind them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from alerting.lifecycle import is_open
from alerting.notification import Location, Notification


@dataclass(frozen=True)
class Incident:
    """One incident (one alert_id) as it is now; times are epoch seconds."""

    alert_id: str
    state: str  # raised | acknowledged | cleared | resolved
    sensor_id: str
    kind: str
    severity: str  # of the raised event (a cleared event's own severity is "info")
    opened_at: float  # when the store first recorded it (wall clock; escalation counts from here)
    raised_at: float | None  # event time of the raised event
    cleared_at: float | None
    acknowledged_at: float | None
    acknowledged_by: str | None
    outcome: str | None
    ack_note: str | None
    resolved_at: float | None
    resolved_by: str | None
    resolve_note: str | None
    escalated_at: float | None
    silenced: bool
    test: bool
    score: float | None
    model_version: str | None
    location: Location = field(default_factory=Location)

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    @property
    def open(self) -> bool:
        """Someone still has to act (a cleared incident stays open until acknowledged)."""
        return is_open(self.state, acknowledged=self.acknowledged)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["acknowledged"], doc["open"] = self.acknowledged, self.open
        return doc


@dataclass(frozen=True)
class AlertEventRow:
    """One raised or cleared event as recorded, with the topic position it was read from."""

    id: int
    alert_id: str
    state: str
    sensor_id: str
    kind: str
    severity: str
    event_time: float
    detected_at: float
    score: float | None
    model_version: str | None
    evidence: dict[str, Any]
    arrival_time: float | None
    topic: str
    partition: int
    offset: int
    recorded_at: float
    test: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Acknowledgement:
    id: int
    alert_id: str
    by: str
    outcome: str
    note: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeliveryRow:
    """One outbox row: a notification for one channel and what became of it."""

    id: int
    alert_id: str
    state: str
    channel: str
    idempotency_key: str
    status: str  # pending | sent | failed_permanently
    attempts: int
    next_attempt_at: float | None
    last_error: str | None
    created_at: float
    sent_at: float | None
    latency_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PendingDelivery:
    """A delivery a channel's worker is to send now."""

    id: int
    channel: str
    notification: Notification
    attempts: int


@dataclass(frozen=True)
class IncidentDetail:
    """An incident with everything recorded about it."""

    incident: Incident
    events: list[AlertEventRow]
    acknowledgements: list[Acknowledgement]
    deliveries: list[DeliveryRow]

    def to_dict(self) -> dict[str, Any]:
        return {"incident": self.incident.to_dict(), "events": [e.to_dict() for e in self.events],
                "acknowledgements": [a.to_dict() for a in self.acknowledgements],
                "deliveries": [d.to_dict() for d in self.deliveries]}


@dataclass(frozen=True)
class DeviceUnwantedAlarms:
    """A detector's unwanted alarms in the last 12 months; BS 5839-1 advises attention from 3."""

    sensor_id: str
    unwanted_12m: int
    flagged: bool


@dataclass(frozen=True)
class FleetKpis:
    """Fleet figures at ``at``: unwanted alarms, time to acknowledge, open work, deliveries.

    Unwanted alarms are fire incidents acknowledged as nuisance or equipment fault in
    the 12 months before ``at``; test alarms never count. The rate is per 100
    detectors over those 12 months (BS 5839-1's measure), None without detectors.
    """

    at: float
    detectors: int
    unwanted_alarms_12m: int
    unwanted_per_100_detectors_per_year: float | None
    devices: list[DeviceUnwantedAlarms]  # every device with at least one, most first
    flagged_devices: list[str]  # 3 or more in 12 months
    acknowledged_12m: int
    ack_time_p50_s: float | None
    ack_time_p95_s: float | None
    open_incidents: int
    unacknowledged: int
    deliveries: dict[str, dict[str, int]]  # channel -> status -> count

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
