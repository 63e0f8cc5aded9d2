"""What a delivery channel sends: one state change of one incident, with where it is.

A notification is built once, when the state change is recorded, and stored as
JSON with its pending deliveries (the store's outbox), so a channel that is down
sends, when it is back, exactly what it would have sent at the time.

Its idempotency key is ``alert_id:state``: a receiver that sees a key twice (a
retry after a lost answer, a resend after a crash) drops the repeat.

>>> n = Notification(alert_id="a" * 32, state="raised", kind="fire", severity="critical",
...     sensor_id="s1", event_time=1700000003.0, detected_at=1700000003.2, score=2.5)
>>> n.idempotency_key == "a" * 32 + ":raised"
True
>>> Notification.from_dict(n.to_dict()) == n
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# The states a notification announces. "raised" and "cleared" come from the stream;
# "acknowledged" and "resolved" from an operator; "escalated" from the router's timer.
RAISED, ACKNOWLEDGED, CLEARED, RESOLVED, ESCALATED = "raised", "acknowledged", "cleared", "resolved", "escalated"
STATES = (RAISED, ACKNOWLEDGED, CLEARED, RESOLVED, ESCALATED)


@dataclass(frozen=True)
class Location:
    """Where a sensor is, from the sensors table (empty strings when unknown)."""

    site: str = ""
    building: str = ""
    floor: str = ""
    zone: str = ""
    description: str = ""

    def label(self) -> str:
        """What a person reads: "Building B, floor 2, kitchen" (empty when nothing is known)."""
        parts = [self.site, self.building, f"floor {self.floor}" if self.floor else "", self.zone, self.description]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Notification:
    """One incident state change as delivered; times are epoch seconds."""

    alert_id: str
    state: str
    kind: str
    severity: str
    sensor_id: str
    event_time: float
    detected_at: float
    score: float | None = None
    model_version: str | None = None
    location: Location = field(default_factory=Location)
    evidence: dict[str, Any] = field(default_factory=dict)
    # Wall clock when the reading that completed the evidence arrived at the stream
    # (delivery latency is measured from it); None when the event did not carry it.
    arrival_time: float | None = None
    # A test alarm (smoke test-alarm): delivered like any other, marked as such everywhere.
    test: bool = False
    # Who made an operator state change, their note and outcome (acknowledged/resolved).
    by: str | None = None
    note: str | None = None
    outcome: str | None = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.alert_id}:{self.state}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Notification:
        doc = dict(doc)
        doc["location"] = Location(**doc.get("location") or {})
        return cls(**doc)
