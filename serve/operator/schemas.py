"""Bodies of the operator API: what it answers and accepts; FastAPI's OpenAPI description is built from them.

Times are epoch seconds (``*_at``), the unit the store keeps; ``label`` of a location is
what a person reads ("Site A, B, floor 2, kitchen"). Requests forbid unknown keys, so a
misspelt field is a 422 that names it rather than a silently ignored value.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from alerting.lifecycle import OUTCOMES
from ingest.alert_message import FIRE, SILENT, STUCK

KINDS = (FIRE, STUCK, SILENT)
Kind = Literal["fire", "sensor_stuck", "sensor_silent"]
# The outcomes of BS 5839-1's false-alarm categories, as the store takes them.
Outcome = Literal[OUTCOMES]  # type: ignore[valid-type]
Name = Field(min_length=1, max_length=100, pattern=r"^\S(.*\S)?$", description="who did it (a person or a team)")


class Out(BaseModel):
    """A response body: built from the store's frozen dataclasses by attribute."""

    model_config = ConfigDict(from_attributes=True)


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocationOut(Out):
    site: str = ""
    building: str = ""
    floor: str = ""
    zone: str = ""
    description: str = ""
    label: str = Field("", description="what a person reads, e.g. 'Site A, B, floor 2, kitchen'")


class IncidentOut(Out):
    alert_id: str
    sensor_id: str
    kind: str
    severity: str
    state: str = Field(description="raised | acknowledged | cleared | resolved (lifecycle of docs/alerting.md)")
    open: bool = Field(description="someone still has to act: not resolved, and a cleared incident stays open "
                                   "until acknowledged")
    opened_at: float = Field(description="when the store first recorded it (escalation counts from here)")
    raised_at: float | None = Field(description="event time of the reading that raised it")
    cleared_at: float | None = None
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    outcome: str | None = None
    ack_note: str | None = None
    resolved_at: float | None = None
    resolved_by: str | None = None
    resolve_note: str | None = None
    escalated_at: float | None = None
    silenced: bool = False
    test: bool = False
    score: float | None = None
    model_version: str | None = None
    location: LocationOut = LocationOut()


class IncidentPage(Out):
    incidents: list[IncidentOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last one")


class EventOut(Out):
    id: int
    alert_id: str
    state: str
    kind: str
    severity: str
    sensor_id: str
    event_time: float
    detected_at: float
    arrival_time: float | None = None
    recorded_at: float
    score: float | None = None
    model_version: str | None = None
    evidence: dict[str, Any] = Field({}, description="what fired: detectors with observed vs threshold, "
                                                     "channels, the fusion rule")
    test: bool = False
    topic: str
    partition: int
    offset: int


class AcknowledgementOut(Out):
    id: int
    alert_id: str
    by: str
    outcome: str
    note: str = ""
    at: float


class DeliveryOut(Out):
    id: int
    alert_id: str
    state: str
    channel: str
    idempotency_key: str
    status: str = Field(description="pending | sent | failed_permanently")
    attempts: int
    created_at: float
    sent_at: float | None = None
    next_attempt_at: float | None = None
    last_error: str | None = None
    latency_s: float | None = None


class IncidentDetailOut(Out):
    incident: IncidentOut
    events: list[EventOut]
    acknowledgements: list[AcknowledgementOut]
    deliveries: list[DeliveryOut]


class ReadingsOut(Out):
    """One sensor's readings around an incident (the console's plot)."""

    alert_id: str
    sensor_id: str
    start: float
    end: float
    raised_at: float | None
    cleared_at: float | None
    channels: list[str]
    timestamps: list[float]
    values: dict[str, list[float | None]] = Field(description="channel -> values at ``timestamps`` (null: missing)")
    note: str | None = Field(description="why there are no readings, when there are none")


class AckRequest(In):
    by: str = Name
    outcome: Outcome = Field(description="fire | nuisance | equipment_fault | test | unknown (BS 5839-1)")
    note: str = Field("", max_length=2000)


class ResolveRequest(In):
    by: str = Name
    note: str = Field("", max_length=2000)


class SilenceRequest(In):
    """A maintenance window: incidents it matches are recorded and shown but not delivered.

    Give at least one matcher (all given must match), and either ``ends_at`` or ``duration_s``.
    """

    sensor_id: str | None = Field(None, min_length=1, max_length=200)
    zone: str | None = Field(None, min_length=1, max_length=200)
    site: str | None = Field(None, min_length=1, max_length=200)
    kind: Kind | None = None
    starts_at: float | None = Field(None, ge=0, description="epoch seconds; default now")
    ends_at: float | None = Field(None, ge=0, description="epoch seconds; or give duration_s")
    duration_s: float | None = Field(None, gt=0, le=366 * 86400, description="from starts_at; or give ends_at")
    created_by: str = Name
    comment: str = Field(min_length=1, max_length=2000, description="why (a maintenance window, hot works, ...)")


class SilenceOut(Out):
    id: int
    sensor_id: str | None = None
    zone: str | None = None
    site: str | None = None
    kind: str | None = None
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    created_at: float
    active: bool = Field(description="in force now")


class SilenceList(Out):
    silences: list[SilenceOut]


class SensorIn(In):
    site: str = Field("", max_length=200)
    building: str = Field("", max_length=200)
    floor: str = Field("", max_length=50)
    zone: str = Field("", max_length=200)
    description: str = Field("", max_length=500)


class SensorOut(Out):
    sensor_id: str
    site: str = ""
    building: str = ""
    floor: str = ""
    zone: str = ""
    description: str = ""
    label: str = ""


class SensorList(Out):
    sensors: list[SensorOut]


class DeviceUnwantedAlarmsOut(Out):
    sensor_id: str
    unwanted_12m: int
    flagged: bool = Field(description="3 or more in 12 months: BS 5839-1 advises looking into the device")


class KpisOut(Out):
    """Fleet figures; unwanted alarms are fire incidents acknowledged nuisance or equipment_fault in the last
    12 months (test alarms never count); None where there is nothing to measure yet, never 0."""

    at: float
    detectors: int
    unwanted_alarms_12m: int
    unwanted_per_100_detectors_per_year: float | None
    devices: list[DeviceUnwantedAlarmsOut]
    flagged_devices: list[str]
    acknowledged_12m: int
    ack_time_p50_s: float | None
    ack_time_p95_s: float | None
    open_incidents: int
    unacknowledged: int
    deliveries: dict[str, dict[str, int]] = Field(description="channel -> status -> count")


class FleetSensorOut(Out):
    sensor_id: str
    label: str
    last_reading_at: float | None = Field(description="its last reading in the lake within the window; null: none")
    age_s: float | None
    trouble: list[str] = Field(description="open sensor_silent / sensor_stuck incidents")
    silenced: bool = Field(description="a silence in force covers it")
    trusted: bool = Field(description="it reported within the window and has no open trouble")


class FleetZoneOut(Out):
    site: str
    zone: str
    sensors: list[FleetSensorOut]


class FleetOut(Out):
    at: float
    window_s: float
    note: str | None = Field(description="why no reading ages are known, when the lake cannot be read")
    zones: list[FleetZoneOut]


class Deleted(Out):
    deleted: str


class OperatorHealth(Out):
    status: Literal["healthy", "degraded"]
    store: str = Field(description="'ok', or why the store cannot be read")
    version: str
    uptime_seconds: float
