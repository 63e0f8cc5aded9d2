"""The alert store: every alert event, incident, acknowledgement, silence and delivery, durably.

One database (SQLite file by default, PostgreSQL in production; see
:mod:`alerting.database`) behind one class. Every state change is one
transaction: the event or operator action, the incident's new state, the
router's consumer offset (for events) and one pending delivery per channel
that the routing names (unless a silence covers the incident). So a crash at
any point leaves either all of it or none of it, and a restarted router resumes
exactly after the last event it recorded.

Duplicates are dropped by the database itself: an event is unique by
``(alert_id, state)`` and by its topic position, a delivery by
``(idempotency_key, channel)``.

>>> import tempfile, os
>>> from ingest.alert_message import AlertEvent
>>> store = AlertStore.open("sqlite:///" + os.path.join(tempfile.mkdtemp(), "alerts.db"))
>>> e = AlertEvent("a1", "s1", "fire", "critical", "raised", 100.0, 100.2, 2.5, "v1", {})
>>> store.record_event(e, topic="smoke_alerts", partition=0, offset=7)
True
>>> store.record_event(e, topic="smoke_alerts", partition=0, offset=7)
False
>>> store.committed_offsets("smoke_alerts")
{0: 8}
>>> store.acknowledge("a1", by="ana", outcome="nuisance", note="toast", at=130.0).state
'acknowledged'
>>> store.close()
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, update

from alerting import schema
from alerting.database import WRITE, absolute_dsn, create_store_engine, migrate
from alerting.lifecycle import (
    FIRE,
    INCIDENT_STATES,
    OPEN,
    OUTCOMES,
    UNWANTED_OUTCOMES,
    InvalidTransition,
    check_outcome,
    due_for_escalation,
    next_state,
)
from alerting.notification import ACKNOWLEDGED, CLEARED, ESCALATED, RAISED, RESOLVED, Location, Notification
from alerting.records import (
    Acknowledgement,
    AlertEventRow,
    DeliveryRow,
    DeviceUnwantedAlarms,
    FleetKpis,
    Incident,
    IncidentDetail,
    PendingDelivery,
)
from alerting.sensors import SensorInfo
from alerting.silences import Silence, SilenceSpec, matches
from ingest.alert_message import AlertEvent

__all__ = [
    "OUTCOMES", "Acknowledgement", "AlertEventRow", "AlertStore", "DeliveryRow", "FleetKpis", "Incident",
    "IncidentDetail", "InvalidTransition", "PendingDelivery", "Routing", "SensorInfo", "Silence", "SilenceSpec",
    "UnknownIncident", "absolute_dsn",
]

log = logging.getLogger(__name__)

PENDING, SENT, FAILED_PERMANENTLY = "pending", "sent", "failed_permanently"
DELIVERY_STATUSES = (PENDING, SENT, FAILED_PERMANENTLY)
YEAR_S = 365.0 * 86400.0
UNWANTED_FLAG = 3  # BS 5839-1: a detector with 3 or more unwanted alarms in 12 months needs attention
MAX_ERROR_CHARS = 2000


class Routing(Protocol):
    """Which channels a notification goes to (alerting.routing.Routing implements it)."""

    def channels_for(self, notification: Notification) -> list[str]: ...


class UnknownIncident(LookupError):
    """No incident has this alert id."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(f"no incident {alert_id!r}")
        self.alert_id = alert_id


class AlertStore:
    """The alert service's database; open with :meth:`open`. Thread-safe (one connection per call)."""

    def __init__(self, engine: Engine, routing: Routing | None = None) -> None:
        self._engine = engine
        self.routing = routing

    @classmethod
    def open(cls, dsn: str, routing: Routing | None = None) -> AlertStore:
        """Connect and bring the schema to the newest migration (Alembic ``upgrade head``)."""
        engine = create_store_engine(dsn)
        try:
            migrate(engine)
        except Exception:
            engine.dispose()
            raise
        return cls(engine, routing)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    # --- transactions ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.connect().execution_options(**{WRITE: True}) as c, c.begin():
            yield c

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as c:
            yield c

    # --- the router's side -----------------------------------------------------------------------

    def committed_offsets(self, topic: str) -> dict[int, int]:
        """Partition -> the next offset to read, for every partition an event was recorded from."""
        t = schema.consumer_offsets
        with self._read() as c:
            rows = c.execute(select(t.c.source_partition, t.c.next_offset).where(t.c.topic == topic))
            return {int(p): int(o) for p, o in rows}

    def record_event(self, event: AlertEvent, *, topic: str, partition: int, offset: int,
                     arrival_time: float | None = None) -> bool:
        """Record one event read at ``topic/partition/offset``, in one transaction with the offset.

        Returns False (and records nothing but the offset) when the event was recorded
        before: the same position, or the same ``(alert_id, state)`` sent again by a
        stream worker that restarted.
        """
        now = time.time()
        with self._write() as c:
            ev = schema.alert_events
            position = self._position(c, topic, partition)
            if position is not None and offset < position[0]:
                return False  # read again after a crash: recorded (or skipped) in an earlier transaction
            epoch = 0 if position is None else position[1]
            seen = c.execute(select(ev.c.id).where(ev.c.alert_id == event.alert_id,
                                                   ev.c.state == event.state).limit(1)).first()
            self._advance_offset(c, topic, partition, offset + 1)
            if seen is not None:
                return False
            incident = self._locked_incident(c, event.alert_id)
            location = self._location(c, event.sensor_id)
            test = bool(incident.test) if incident is not None else self._in_test_alarm(
                c, event.sensor_id, event.event_time)
            c.execute(insert(ev).values(
                alert_id=event.alert_id, state=event.state, sensor_id=event.sensor_id, kind=event.kind,
                severity=event.severity, event_time=event.event_time, detected_at=event.detected_at,
                score=_finite(event.score), model_version=event.model_version, evidence=_json_safe(event.evidence),
                arrival_time=arrival_time, source_topic=topic, source_epoch=epoch, source_partition=partition,
                source_offset=offset,
                recorded_at=now, test=test))
            silenced = self._silenced(c, event.sensor_id, event.kind, location, event.detected_at)
            inc = schema.incidents
            if incident is None:
                state = next_state(RAISED, acknowledged=False, change=event.state)
                raised_at = event.event_time if event.state == RAISED else _number(event.evidence.get("raised_at"))
                c.execute(insert(inc).values(
                    alert_id=event.alert_id, state=state, sensor_id=event.sensor_id, kind=event.kind,
                    severity=event.severity, score=_finite(event.score), model_version=event.model_version,
                    opened_at=now, raised_at=raised_at,
                    cleared_at=event.event_time if event.state == CLEARED else None,
                    silenced=silenced, test=test, arrival_time=arrival_time, updated_at=now))
                severity = event.severity
            else:
                state = next_state(incident.state, acknowledged=incident.acknowledged_at is not None,
                                   change=event.state)
                silenced = silenced or bool(incident.silenced)
                values: dict[str, Any] = {"state": state, "silenced": silenced, "updated_at": now}
                if event.state == CLEARED:
                    values["cleared_at"] = event.event_time
                c.execute(update(inc).where(inc.c.alert_id == event.alert_id).values(**values))
                severity = incident.severity
            notification = Notification(
                alert_id=event.alert_id, state=event.state, kind=event.kind, severity=severity,
                sensor_id=event.sensor_id, event_time=event.event_time, detected_at=event.detected_at,
                score=_finite(event.score), model_version=event.model_version, location=location,
                evidence=_json_safe(event.evidence), arrival_time=arrival_time, test=test)
            if not silenced:
                self._enqueue(c, notification, now)
        return True

    def skip_offset(self, topic: str, partition: int, offset: int) -> bool:
        """Move past a message that is not an alert event (sent to the dead-letter topic); False if passed already."""
        with self._write() as c:
            position = self._position(c, topic, partition)
            if position is not None and offset < position[0]:
                return False
            self._advance_offset(c, topic, partition, offset + 1)
        return True

    def reset_offsets(self, topic: str, partition: int) -> int:
        """The broker lost this partition's log (a memory-only broker restarted): read it from 0 again.

        Starts a new epoch, so the new log's offsets do not collide with the recorded ones;
        events read again are dropped by their ``(alert_id, state)``. Returns the new epoch.
        """
        t = schema.consumer_offsets
        with self._write() as c:
            position = self._position(c, topic, partition)
            epoch = 0 if position is None else position[1] + 1
            if position is None:
                c.execute(insert(t).values(topic=topic, source_partition=partition, next_offset=0, epoch=epoch))
            else:
                c.execute(update(t).where(t.c.topic == topic, t.c.source_partition == partition).values(
                    next_offset=0, epoch=epoch))
        log.warning("alert store: %s/%d starts again from offset 0 (epoch %d)", topic, partition, epoch)
        return epoch

    def escalate_due(self, now: float, after_s: Mapping[str, float]) -> list[str]:
        """Escalate every unacknowledged incident older than its severity's delay; returns their ids.

        Each escalation is its own transaction, conditional on the incident still being
        unacknowledged, so an acknowledgement that lands meanwhile wins.
        """
        inc = schema.incidents
        if not after_s:
            return []
        with self._read() as c:
            candidates = c.execute(select(inc).where(
                inc.c.escalated_at.is_(None), inc.c.acknowledged_at.is_(None), inc.c.state != RESOLVED,
                inc.c.severity.in_(list(after_s))).order_by(inc.c.opened_at, inc.c.alert_id)).all()
        escalated = []
        for row in candidates:
            if not due_for_escalation(severity=row.severity, opened_at=row.opened_at, now=now, acknowledged=False,
                                      state=row.state, escalated_at=None, after_s=after_s):
                continue
            with self._write() as c:
                done = c.execute(update(inc).where(
                    inc.c.alert_id == row.alert_id, inc.c.escalated_at.is_(None), inc.c.acknowledged_at.is_(None),
                    inc.c.state != RESOLVED).values(escalated_at=now, updated_at=now)).rowcount
                if not done:
                    continue
                incident = self._incident_row(c, row.alert_id)
                assert incident is not None
                silenced = incident.silenced or self._silenced(
                    c, incident.sensor_id, incident.kind, incident.location, now)
                if not silenced:
                    self._enqueue(c, self._operator_notification(c, incident, ESCALATED, now), now)
            escalated.append(row.alert_id)
        return escalated

    # --- the outbox (the dispatcher's side) ------------------------------------------------------

    def due_deliveries(self, channel: str, now: float, limit: int = 100) -> list[PendingDelivery]:
        """The channel's pending deliveries to send now, oldest first.

        The list stops at the channel's first pending delivery that is not due yet (one
        waiting for its retry): a later notification of the same incident must not
        overtake it, so the channel waits behind it (head-of-line blocking per channel).
        """
        d = schema.deliveries
        with self._read() as c:
            rows = c.execute(select(d.c.id, d.c.channel, d.c.payload, d.c.attempts, d.c.next_attempt_at)
                             .where(d.c.channel == channel, d.c.status == PENDING)
                             .order_by(d.c.id).limit(limit)).all()
        out = []
        for row in rows:
            if row.next_attempt_at is not None and row.next_attempt_at > now:
                break
            out.append(PendingDelivery(int(row.id), row.channel, Notification.from_dict(row.payload),
                                       int(row.attempts)))
        return out

    def mark_delivered(self, delivery_id: int, *, at: float, latency_s: float | None) -> None:
        d = schema.deliveries
        with self._write() as c:
            c.execute(update(d).where(d.c.id == delivery_id).values(
                status=SENT, sent_at=at, latency_s=latency_s, attempts=d.c.attempts + 1, next_attempt_at=None,
                last_error=None))

    def mark_failed(self, delivery_id: int, *, at: float, error: str, next_attempt_at: float | None) -> None:
        """One failed attempt; ``next_attempt_at`` None gives up (``failed_permanently``)."""
        d = schema.deliveries
        values: dict[str, Any] = {"attempts": d.c.attempts + 1, "last_error": error[:MAX_ERROR_CHARS],
                                  "next_attempt_at": next_attempt_at}
        if next_attempt_at is None:
            values["status"] = FAILED_PERMANENTLY
        with self._write() as c:
            c.execute(update(d).where(d.c.id == delivery_id).values(**values))

    def pending_count(self, channel: str | None = None) -> dict[str, int]:
        """Channel -> deliveries still pending."""
        d = schema.deliveries
        query = select(d.c.channel, func.count()).where(d.c.status == PENDING).group_by(d.c.channel)
        if channel is not None:
            query = query.where(d.c.channel == channel)
        with self._read() as c:
            return {ch: int(n) for ch, n in c.execute(query)}

    # --- operator actions ------------------------------------------------------------------------

    def acknowledge(self, alert_id: str, *, by: str, outcome: str, note: str = "", at: float) -> Incident:
        """Take an incident with an outcome; raises UnknownIncident, InvalidTransition or ValueError."""
        check_outcome(outcome)
        by = _required_text("by", by)
        with self._write() as c:
            row = self._locked_incident(c, alert_id)
            if row is None:
                raise UnknownIncident(alert_id)
            state = next_state(row.state, acknowledged=row.acknowledged_at is not None, change=ACKNOWLEDGED)
            inc = schema.incidents
            c.execute(update(inc).where(inc.c.alert_id == alert_id).values(
                state=state, acknowledged_at=at, acknowledged_by=by, outcome=outcome, ack_note=note, updated_at=at))
            c.execute(insert(schema.acknowledgements).values(alert_id=alert_id, by=by, outcome=outcome, note=note,
                                                             at=at))
            incident = self._incident_row(c, alert_id)
            assert incident is not None
            if not incident.silenced:
                self._enqueue(c, self._operator_notification(c, incident, ACKNOWLEDGED, at, by=by, note=note,
                                                             outcome=outcome), at)
            return incident

    def resolve(self, alert_id: str, *, by: str, note: str = "", at: float) -> Incident:
        """Close an acknowledged incident; raises UnknownIncident or InvalidTransition."""
        by = _required_text("by", by)
        with self._write() as c:
            row = self._locked_incident(c, alert_id)
            if row is None:
                raise UnknownIncident(alert_id)
            state = next_state(row.state, acknowledged=row.acknowledged_at is not None, change=RESOLVED)
            inc = schema.incidents
            c.execute(update(inc).where(inc.c.alert_id == alert_id).values(
                state=state, resolved_at=at, resolved_by=by, resolve_note=note, updated_at=at))
            incident = self._incident_row(c, alert_id)
            assert incident is not None
            if not incident.silenced:
                self._enqueue(c, self._operator_notification(c, incident, RESOLVED, at, by=by, note=note,
                                                             outcome=incident.outcome), at)
            return incident

    # --- reading ---------------------------------------------------------------------------------

    def list_incidents(self, *, state: str | None = None, sensor_id: str | None = None, site: str | None = None,
                       zone: str | None = None, kind: str | None = None, since: float | None = None,
                       until: float | None = None, include_test: bool = True, limit: int = 100,
                       offset: int = 0) -> list[Incident]:
        """Incidents, newest first; ``state`` is a lifecycle state or ``"open"``; times filter ``opened_at``."""
        inc, s = schema.incidents, schema.sensors
        query = _incident_select()
        if state == OPEN:
            query = query.where(inc.c.state != RESOLVED,
                                or_(inc.c.state != CLEARED, inc.c.acknowledged_at.is_(None)))
        elif state is not None:
            if state not in INCIDENT_STATES:
                raise ValueError(f"state must be one of {', '.join((*INCIDENT_STATES, OPEN))} (got {state!r})")
            query = query.where(inc.c.state == state)
        for column, value in ((inc.c.sensor_id, sensor_id), (s.c.site, site), (s.c.zone, zone), (inc.c.kind, kind)):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(inc.c.opened_at >= since)
        if until is not None:
            query = query.where(inc.c.opened_at < until)
        if not include_test:
            query = query.where(inc.c.test.is_(False))
        query = query.order_by(inc.c.opened_at.desc(), inc.c.alert_id).limit(limit).offset(offset)
        with self._read() as c:
            return [_incident(r) for r in c.execute(query)]

    def incident(self, alert_id: str) -> IncidentDetail | None:
        ev, ack, d = schema.alert_events, schema.acknowledgements, schema.deliveries
        with self._read() as c:
            incident = self._incident_row(c, alert_id)
            if incident is None:
                return None
            events = [_event(r) for r in c.execute(select(ev).where(ev.c.alert_id == alert_id).order_by(ev.c.id))]
            acks = [Acknowledgement(r.id, r.alert_id, r.by, r.outcome, r.note, r.at)
                    for r in c.execute(select(ack).where(ack.c.alert_id == alert_id).order_by(ack.c.id))]
            deliveries = [_delivery(r) for r in c.execute(select(d).where(d.c.alert_id == alert_id).order_by(d.c.id))]
        return IncidentDetail(incident, events, acks, deliveries)

    def events(self, *, since: float | None = None, until: float | None = None, sensor_id: str | None = None,
               limit: int = 1000) -> list[AlertEventRow]:
        """Recorded events in event-time order; ``since``/``until`` filter the event time."""
        ev = schema.alert_events
        query = select(ev)
        if since is not None:
            query = query.where(ev.c.event_time >= since)
        if until is not None:
            query = query.where(ev.c.event_time < until)
        if sensor_id is not None:
            query = query.where(ev.c.sensor_id == sensor_id)
        with self._read() as c:
            return [_event(r) for r in c.execute(query.order_by(ev.c.event_time, ev.c.id).limit(limit))]

    # --- silences --------------------------------------------------------------------------------

    def add_silence(self, spec: SilenceSpec) -> Silence:
        """Store a (validated) silence; it applies to alerts recorded from now on."""
        if not isinstance(spec, SilenceSpec):
            raise TypeError("add_silence takes a SilenceSpec")
        now = time.time()
        with self._write() as c:
            new_id = c.execute(insert(schema.silences).values(
                sensor_id=spec.sensor_id, zone=spec.zone, site=spec.site, kind=spec.kind, starts_at=spec.starts_at,
                ends_at=spec.ends_at, created_by=spec.created_by, comment=spec.comment, created_at=now)
                .returning(schema.silences.c.id)).scalar_one()
        return Silence(**{**_spec_fields(spec), "id": int(new_id), "created_at": now})

    def silences(self, *, active_at: float | None = None) -> list[Silence]:
        """Every silence, or those in force at ``active_at``; by start time."""
        t = schema.silences
        query = select(t).order_by(t.c.starts_at, t.c.id)
        if active_at is not None:
            query = query.where(t.c.starts_at <= active_at, t.c.ends_at > active_at)
        with self._read() as c:
            return [_silence(r) for r in c.execute(query)]

    def delete_silence(self, silence_id: int) -> bool:
        with self._write() as c:
            return bool(c.execute(delete(schema.silences).where(schema.silences.c.id == silence_id)).rowcount)

    # --- sensors ---------------------------------------------------------------------------------

    def sensors(self) -> list[SensorInfo]:
        s = schema.sensors
        with self._read() as c:
            return [_sensor(r) for r in c.execute(select(s).order_by(s.c.sensor_id))]

    def sensor(self, sensor_id: str) -> SensorInfo | None:
        s = schema.sensors
        with self._read() as c:
            row = c.execute(select(s).where(s.c.sensor_id == sensor_id)).first()
        return None if row is None else _sensor(row)

    def upsert_sensor(self, info: SensorInfo) -> SensorInfo:
        s = schema.sensors
        values = {k: v for k, v in info.to_dict().items() if k != "sensor_id"}
        with self._write() as c:
            done = c.execute(update(s).where(s.c.sensor_id == info.sensor_id).values(
                **values, updated_at=time.time())).rowcount
            if not done:
                c.execute(insert(s).values(sensor_id=info.sensor_id, **values, updated_at=time.time()))
        return info

    def seed_sensors(self, infos: Sequence[SensorInfo]) -> int:
        """Add the sensors not in the table yet (the file seeds; edits made through the API stay); returns added."""
        s = schema.sensors
        with self._write() as c:
            known = set(c.execute(select(s.c.sensor_id)).scalars())
            fresh = [i for i in infos if i.sensor_id not in known]
            if fresh:
                now = time.time()
                c.execute(insert(s), [{**i.to_dict(), "updated_at": now} for i in fresh])
        return len(fresh)

    def delete_sensor(self, sensor_id: str) -> bool:
        with self._write() as c:
            return bool(c.execute(delete(schema.sensors).where(schema.sensors.c.sensor_id == sensor_id)).rowcount)

    # --- test alarms -----------------------------------------------------------------------------

    def add_test_alarm(self, sensor_id: str, *, starts_at: float, ends_at: float, by: str) -> None:
        """Announce a test alarm: the sensor's events with event time in the window are marked test.

        Events recorded already (the announcement came late) are marked too, with their incidents.
        """
        by = _required_text("by", by)
        if not ends_at > starts_at:
            raise ValueError(f"ends_at: must be after starts_at ({starts_at})")
        ev, inc = schema.alert_events, schema.incidents
        with self._write() as c:
            c.execute(insert(schema.test_alarms).values(sensor_id=sensor_id, starts_at=starts_at, ends_at=ends_at,
                                                        created_by=by, created_at=time.time()))
            ids = list(c.execute(select(ev.c.alert_id).where(
                ev.c.sensor_id == sensor_id, ev.c.event_time >= starts_at, ev.c.event_time <= ends_at)).scalars())
            if ids:
                c.execute(update(ev).where(ev.c.alert_id.in_(ids)).values(test=True))
                c.execute(update(inc).where(inc.c.alert_id.in_(ids)).values(test=True))

    # --- KPIs ------------------------------------------------------------------------------------

    def kpis(self, now: float) -> FleetKpis:
        inc, d = schema.incidents, schema.deliveries
        year_ago = now - YEAR_S
        with self._read() as c:
            detectors = int(c.execute(select(func.count()).select_from(schema.sensors)).scalar_one())
            if not detectors:  # no sensors table yet: the detectors that have reported anything
                detectors = int(c.execute(select(func.count(func.distinct(inc.c.sensor_id)))).scalar_one())
            per_device = c.execute(
                select(inc.c.sensor_id, func.count()).where(
                    inc.c.kind == FIRE, inc.c.test.is_(False), inc.c.outcome.in_(UNWANTED_OUTCOMES),
                    inc.c.opened_at >= year_ago, inc.c.opened_at <= now)
                .group_by(inc.c.sensor_id)).all()
            ack_times = [float(a - o) for a, o in c.execute(select(inc.c.acknowledged_at, inc.c.opened_at).where(
                inc.c.acknowledged_at.is_not(None), inc.c.test.is_(False), inc.c.opened_at >= year_ago))]
            open_rows = c.execute(select(inc.c.state, inc.c.acknowledged_at).where(inc.c.state != RESOLVED)).all()
            by_channel: dict[str, dict[str, int]] = {}
            for channel, status, n in c.execute(select(d.c.channel, d.c.status, func.count())
                                                .group_by(d.c.channel, d.c.status)):
                by_channel.setdefault(channel, dict.fromkeys(DELIVERY_STATUSES, 0))[status] = int(n)
        devices = sorted((DeviceUnwantedAlarms(s, int(n), int(n) >= UNWANTED_FLAG) for s, n in per_device),
                         key=lambda x: (-x.unwanted_12m, x.sensor_id))
        unwanted = sum(x.unwanted_12m for x in devices)
        open_incidents = [r for r in open_rows if not (r.state == CLEARED and r.acknowledged_at is not None)]
        return FleetKpis(
            at=now, detectors=detectors, unwanted_alarms_12m=unwanted,
            unwanted_per_100_detectors_per_year=100.0 * unwanted / detectors if detectors else None,
            devices=devices, flagged_devices=[x.sensor_id for x in devices if x.flagged],
            acknowledged_12m=len(ack_times), ack_time_p50_s=_quantile(ack_times, 0.5),
            ack_time_p95_s=_quantile(ack_times, 0.95), open_incidents=len(open_incidents),
            unacknowledged=sum(1 for r in open_incidents if r.acknowledged_at is None), deliveries=by_channel)

    # --- internals -------------------------------------------------------------------------------

    def _position(self, c: Connection, topic: str, partition: int) -> tuple[int, int] | None:
        t = schema.consumer_offsets
        row = c.execute(select(t.c.next_offset, t.c.epoch).where(
            t.c.topic == topic, t.c.source_partition == partition)).first()
        return None if row is None else (int(row.next_offset), int(row.epoch))

    def _advance_offset(self, c: Connection, topic: str, partition: int, next_offset: int) -> None:
        t = schema.consumer_offsets
        where = and_(t.c.topic == topic, t.c.source_partition == partition)
        current = c.execute(select(t.c.next_offset).where(where)).scalar()
        if current is None:
            c.execute(insert(t).values(topic=topic, source_partition=partition, next_offset=next_offset, epoch=0))
        elif next_offset > current:
            c.execute(update(t).where(where).values(next_offset=next_offset))

    def _locked_incident(self, c: Connection, alert_id: str) -> Any:
        # FOR UPDATE on PostgreSQL (an acknowledgement and an event of one incident serialize);
        # SQLite's BEGIN IMMEDIATE has locked the whole database already.
        inc = schema.incidents
        return c.execute(select(inc).where(inc.c.alert_id == alert_id).with_for_update()).first()

    def _incident_row(self, c: Connection, alert_id: str) -> Incident | None:
        row = c.execute(_incident_select().where(schema.incidents.c.alert_id == alert_id)).first()
        return None if row is None else _incident(row)

    def _location(self, c: Connection, sensor_id: str) -> Location:
        s = schema.sensors
        row = c.execute(select(s).where(s.c.sensor_id == sensor_id)).first()
        return Location() if row is None else _sensor(row).location

    def _in_test_alarm(self, c: Connection, sensor_id: str, at: float) -> bool:
        t = schema.test_alarms
        return c.execute(select(t.c.id).where(t.c.sensor_id == sensor_id, t.c.starts_at <= at,
                                              t.c.ends_at >= at).limit(1)).first() is not None

    def _silenced(self, c: Connection, sensor_id: str, kind: str, location: Location, at: float) -> bool:
        t = schema.silences
        active = c.execute(select(t).where(t.c.starts_at <= at, t.c.ends_at > at)).all()
        return any(matches(_silence(r), sensor_id=sensor_id, zone=location.zone, site=location.site, kind=kind, at=at)
                   for r in active)

    def _operator_notification(self, c: Connection, incident: Incident, state: str, at: float, *,
                               by: str | None = None, note: str | None = None,
                               outcome: str | None = None) -> Notification:
        ev = schema.alert_events
        raised = c.execute(select(ev).where(ev.c.alert_id == incident.alert_id).order_by(ev.c.id).limit(1)).first()
        return Notification(
            alert_id=incident.alert_id, state=state, kind=incident.kind, severity=incident.severity,
            sensor_id=incident.sensor_id, event_time=raised.event_time if raised is not None else at,
            detected_at=at, score=incident.score, model_version=incident.model_version, location=incident.location,
            evidence=raised.evidence if raised is not None else {}, arrival_time=None, test=incident.test,
            by=by, note=note, outcome=outcome)

    def _enqueue(self, c: Connection, notification: Notification, now: float) -> None:
        if self.routing is None:
            return
        channels = self.routing.channels_for(notification)
        if not channels:
            return
        payload = notification.to_dict()
        c.execute(insert(schema.deliveries), [
            {"alert_id": notification.alert_id, "state": notification.state, "channel": channel,
             "idempotency_key": notification.idempotency_key, "payload": payload, "status": PENDING, "attempts": 0,
             "next_attempt_at": None, "created_at": now} for channel in dict.fromkeys(channels)])


# --- row -> record ---------------------------------------------------------------------------------


def _incident_select() -> Any:
    inc, s = schema.incidents, schema.sensors
    return select(inc, s.c.site, s.c.building, s.c.floor, s.c.zone, s.c.description).select_from(
        inc.outerjoin(s, s.c.sensor_id == inc.c.sensor_id))


def _incident(r: Any) -> Incident:
    return Incident(
        alert_id=r.alert_id, state=r.state, sensor_id=r.sensor_id, kind=r.kind, severity=r.severity,
        opened_at=r.opened_at, raised_at=r.raised_at, cleared_at=r.cleared_at, acknowledged_at=r.acknowledged_at,
        acknowledged_by=r.acknowledged_by, outcome=r.outcome, ack_note=r.ack_note, resolved_at=r.resolved_at,
        resolved_by=r.resolved_by, resolve_note=r.resolve_note, escalated_at=r.escalated_at,
        silenced=bool(r.silenced), test=bool(r.test), score=r.score, model_version=r.model_version,
        location=Location(site=r.site or "", building=r.building or "", floor=r.floor or "", zone=r.zone or "",
                          description=r.description or ""))


def _event(r: Any) -> AlertEventRow:
    return AlertEventRow(
        id=int(r.id), alert_id=r.alert_id, state=r.state, sensor_id=r.sensor_id, kind=r.kind, severity=r.severity,
        event_time=r.event_time, detected_at=r.detected_at, score=r.score, model_version=r.model_version,
        evidence=r.evidence or {}, arrival_time=r.arrival_time, topic=r.source_topic,
        partition=int(r.source_partition), offset=int(r.source_offset), recorded_at=r.recorded_at, test=bool(r.test))


def _delivery(r: Any) -> DeliveryRow:
    return DeliveryRow(
        id=int(r.id), alert_id=r.alert_id, state=r.state, channel=r.channel, idempotency_key=r.idempotency_key,
        status=r.status, attempts=int(r.attempts), next_attempt_at=r.next_attempt_at, last_error=r.last_error,
        created_at=r.created_at, sent_at=r.sent_at, latency_s=r.latency_s)


def _silence(r: Any) -> Silence:
    return Silence(starts_at=r.starts_at, ends_at=r.ends_at, created_by=r.created_by, sensor_id=r.sensor_id,
                   zone=r.zone, site=r.site, kind=r.kind, comment=r.comment or "", id=int(r.id),
                   created_at=r.created_at)


def _spec_fields(spec: SilenceSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in SilenceSpec.__dataclass_fields__}


def _sensor(r: Any) -> SensorInfo:
    return SensorInfo(sensor_id=r.sensor_id, site=r.site or "", building=r.building or "", floor=r.floor or "",
                      zone=r.zone or "", description=r.description or "")


# --- values ----------------------------------------------------------------------------------------


def _required_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: must name who does it")
    return value.strip()


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _number(value: Any) -> float | None:
    return _finite(value)


def _json_safe(value: Any) -> Any:
    """Evidence as JSON both databases keep: NaN/inf become null (PostgreSQL's JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def _quantile(values: list[float], q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default), None for no values.

    >>> _quantile([1.0, 2.0, 3.0, 4.0], 0.5), _quantile([], 0.5)
    (2.5, None)
    """
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

