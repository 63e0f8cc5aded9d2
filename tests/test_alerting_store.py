"""The alert store against real databases: the same tests on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from alerting import schema
from alerting.lifecycle import InvalidTransition
from alerting.notification import Notification
from alerting.sensors import SensorInfo
from alerting.silences import InvalidSilence, SilenceSpec
from alerting.store import AlertStore, UnknownIncident
from ingest.alert_message import AlertEvent

TOPIC = "smoke_alerts"
T0 = 1_700_000_000.0


class ChannelsByKind:
    """Routing for the tests: every notification to ``webhook``, fire also to ``email``."""

    def channels_for(self, n: Notification) -> list[str]:
        return ["webhook", "email"] if n.kind == "fire" else ["webhook"]


@pytest.fixture(params=["sqlite", "postgresql"])
def dsn(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'alerts.db'}"
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
def store(dsn):
    s = AlertStore.open(dsn, routing=ChannelsByKind())
    s.seed_sensors([SensorInfo("s1", site="HQ", building="B", floor="2", zone="kitchen", description="hob"),
                    SensorInfo("s2", site="HQ", building="A", floor="0", zone="lobby")])
    yield s
    s.close()


def event(alert_id="a1", state="raised", sensor="s1", kind="fire", t=T0, severity=None, **evidence) -> AlertEvent:
    severity = severity or ("critical" if state == "raised" else "info")
    return AlertEvent(alert_id, sensor, kind, severity, state, t, t + 0.2, 2.5, "v0001", evidence)


def record(store: AlertStore, e: AlertEvent, offset: int, partition: int = 0) -> bool:
    return store.record_event(e, topic=TOPIC, partition=partition, offset=offset, arrival_time=e.event_time + 0.1)


def test_the_migrated_schema_is_the_declared_one(store):
    with store._engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c, opts={"compare_type": False}), schema.metadata)
    assert diff == []


def test_an_event_is_recorded_once_with_its_offset_and_one_delivery_per_channel(store):
    assert record(store, event(cpu_c=80.0, score=float("nan")), offset=5)
    assert not record(store, event(), offset=5)  # the same position read again after a crash
    assert not record(store, event(), offset=9)  # the same (alert_id, state) sent again by a restarted worker
    assert store.committed_offsets(TOPIC) == {0: 10}
    assert store.committed_offsets("other") == {}
    detail = store.incident("a1")
    assert detail is not None
    assert detail.incident.state == "raised" and detail.incident.open
    assert detail.incident.location.label() == "HQ, B, floor 2, kitchen, hob"
    assert [(e.state, e.offset, e.partition, e.topic) for e in detail.events] == [("raised", 5, 0, TOPIC)]
    assert detail.events[0].evidence == {"cpu_c": 80.0, "score": None}  # NaN is stored as null
    assert detail.events[0].arrival_time == pytest.approx(T0 + 0.1)
    assert sorted(d.channel for d in detail.deliveries) == ["email", "webhook"]
    due = store.due_deliveries("webhook", now=T0)
    assert [p.notification.idempotency_key for p in due] == ["a1:raised"]
    assert due[0].notification.location.zone == "kitchen" and due[0].notification.arrival_time == T0 + 0.1


def test_offsets_are_kept_per_partition(store):
    record(store, event("a1"), offset=3, partition=0)
    record(store, event("a2", sensor="s2"), offset=0, partition=2)
    assert store.committed_offsets(TOPIC) == {0: 4, 2: 1}


def test_cleared_before_acknowledged_stays_open_until_acknowledged(store):
    record(store, event(), 0)
    record(store, event(state="cleared", t=T0 + 60), 1)
    inc = store.list_incidents(state="open")
    assert [(i.alert_id, i.state) for i in inc] == [("a1", "cleared")]
    acked = store.acknowledge("a1", by="ana", outcome="nuisance", note="toast", at=T0 + 100)
    assert (acked.state, acked.open, acked.outcome, acked.acknowledged_by) == ("cleared", False, "nuisance", "ana")
    assert store.list_incidents(state="open") == []
    resolved = store.resolve("a1", by="ana", note="done", at=T0 + 200)
    assert resolved.state == "resolved" and resolved.resolved_at == T0 + 200
    keys = [d.idempotency_key for d in store.incident("a1").deliveries if d.channel == "webhook"]
    assert keys == ["a1:raised", "a1:cleared", "a1:acknowledged", "a1:resolved"]
    # A notification keeps the incident's severity, so a cleared fire reaches the fire channels.
    assert {d.state for d in store.incident("a1").deliveries if d.channel == "email"} == {
        "raised", "cleared", "acknowledged", "resolved"}


def test_acknowledged_then_cleared_then_resolved(store):
    record(store, event(), 0)
    assert store.acknowledge("a1", by="bo", outcome="fire", at=T0 + 5).state == "acknowledged"
    record(store, event(state="cleared", t=T0 + 60), 1)
    inc = store.incident("a1").incident
    assert inc.state == "cleared" and not inc.open
    assert store.resolve("a1", by="bo", at=T0 + 70).state == "resolved"
    record(store, event("a1", state="cleared", t=T0 + 99), 2)  # late duplicate: nothing changes
    assert store.incident("a1").incident.state == "resolved"


def test_refused_operator_actions_write_nothing(store):
    record(store, event(), 0)
    before = store.incident("a1")
    with pytest.raises(UnknownIncident):
        store.acknowledge("nope", by="ana", outcome="fire", at=T0)
    with pytest.raises(ValueError, match="outcome must be one of"):
        store.acknowledge("a1", by="ana", outcome="false", at=T0)
    with pytest.raises(ValueError, match="by"):
        store.acknowledge("a1", by=" ", outcome="fire", at=T0)
    with pytest.raises(InvalidTransition, match="before resolving"):
        store.resolve("a1", by="ana", at=T0)
    with pytest.raises(UnknownIncident):
        store.resolve("nope", by="ana", at=T0)
    assert store.incident("a1") == before
    store.acknowledge("a1", by="ana", outcome="fire", at=T0 + 1)
    with pytest.raises(InvalidTransition, match="acknowledged already"):
        store.acknowledge("a1", by="bo", outcome="nuisance", at=T0 + 2)
    assert [a.by for a in store.incident("a1").acknowledgements] == ["ana"]


def test_an_unacknowledged_incident_escalates_once_after_its_severity_delay(store):
    record(store, event("a1"), 0)
    record(store, event("a2", kind="sensor_stuck", severity="warning"), 1)
    record(store, event("a3", sensor="s2"), 2)
    store.acknowledge("a3", by="ana", outcome="fire", at=T0)
    opened = store.incident("a1").incident.opened_at
    after = {"critical": 0.5, "warning": 5.0}
    assert store.escalate_due(opened + 0.1, after) == []
    assert store.escalate_due(opened + 0.6, after) == ["a1"]  # a3 was acknowledged, a2 is a warning
    assert store.escalate_due(opened + 1.0, after) == []  # once
    assert store.escalate_due(opened + 6.0, after) == ["a2"]
    assert store.escalate_due(opened + 60.0, {}) == []
    inc = store.incident("a1")
    assert inc.incident.escalated_at == opened + 0.6
    assert {d.idempotency_key for d in inc.deliveries} == {"a1:raised", "a1:escalated"}
    escalated = [p for p in store.due_deliveries("webhook", now=opened + 10) if p.notification.state == "escalated"]
    assert [p.notification.alert_id for p in escalated] == ["a1", "a2"]


def test_a_silenced_alert_is_recorded_and_shown_but_not_delivered(store):
    kitchen = store.add_silence(SilenceSpec(zone="kitchen", starts_at=T0 - 10, ends_at=T0 + 3600,
                                            created_by="ops", comment="hob maintenance"))
    store.add_silence(SilenceSpec(kind="sensor_stuck", starts_at=T0 - 7200, ends_at=T0 - 3600, created_by="ops"))
    record(store, event("a1", sensor="s1"), 0)  # kitchen: silenced
    record(store, event("a2", sensor="s2"), 1)  # lobby: delivered
    record(store, event("a3", sensor="s2", kind="sensor_stuck", severity="warning"), 2)  # silence expired
    record(store, event("a1", state="cleared", t=T0 + 4000), 3)  # after the window: still the silenced incident
    a1 = store.incident("a1")
    assert a1.incident.silenced and len(a1.events) == 2 and a1.deliveries == []
    assert [i.alert_id for i in store.list_incidents()] != []
    assert {p.notification.alert_id for p in store.due_deliveries("webhook", now=T0 + 10_000)} == {"a2", "a3"}
    assert store.escalate_due(store.incident("a1").incident.opened_at + 1e6, {"critical": 1.0}) == ["a1", "a2"]
    assert store.incident("a1").deliveries == []
    assert [s.id for s in store.silences(active_at=T0)] == [kitchen.id]
    assert len(store.silences()) == 2
    assert kitchen.comment == "hob maintenance" and kitchen.created_by == "ops"
    assert store.delete_silence(kitchen.id) and not store.delete_silence(kitchen.id)
    assert len(store.silences()) == 1


def test_an_invalid_silence_names_its_field_and_nothing_is_written(store):
    with pytest.raises(InvalidSilence) as err:
        store.add_silence(SilenceSpec(zone="kitchen", starts_at=T0, ends_at=T0, created_by="ops"))
    assert err.value.field == "ends_at"
    with pytest.raises(InvalidSilence) as err:
        SilenceSpec(starts_at=T0, ends_at=T0 + 1, created_by="ops")
    assert err.value.field == "matchers"
    assert store.silences() == []


def test_deliveries_go_oldest_first_and_a_retry_holds_back_the_channel_only(store):
    record(store, event("a1"), 0)
    record(store, event("a1", state="cleared", t=T0 + 5), 1)
    first, second = store.due_deliveries("webhook", now=T0)
    assert (first.notification.state, second.notification.state) == ("raised", "cleared")
    store.mark_failed(first.id, at=T0, error="connection refused", next_attempt_at=T0 + 30)
    assert store.due_deliveries("webhook", now=T0 + 1) == []  # "cleared" must not overtake "raised"
    assert len(store.due_deliveries("email", now=T0 + 1)) == 2  # the other channel is not held back
    retry = store.due_deliveries("webhook", now=T0 + 30)
    assert [(p.id, p.attempts) for p in retry] == [(first.id, 1), (second.id, 0)]
    store.mark_delivered(first.id, at=T0 + 31, latency_s=0.25)
    store.mark_failed(second.id, at=T0 + 31, error="HTTP 400: bad", next_attempt_at=None)
    assert store.due_deliveries("webhook", now=T0 + 100) == []
    rows = {d.id: d for d in store.incident("a1").deliveries}
    assert (rows[first.id].status, rows[first.id].attempts, rows[first.id].latency_s) == ("sent", 2, 0.25)
    assert (rows[second.id].status, rows[second.id].last_error) == ("failed_permanently", "HTTP 400: bad")
    assert store.pending_count() == {"email": 2}


def test_incidents_and_events_filter(store):
    record(store, event("a1", sensor="s1", t=T0), 0)
    record(store, event("a2", sensor="s2", t=T0 + 10), 1)
    record(store, event("a3", sensor="s9", kind="sensor_silent", severity="warning", t=T0 + 20), 2)
    store.add_test_alarm("s2", starts_at=T0 + 5, ends_at=T0 + 15, by="ops")
    assert {i.alert_id for i in store.list_incidents(site="HQ")} == {"a1", "a2"}
    assert [i.alert_id for i in store.list_incidents(zone="lobby")] == ["a2"]
    assert [i.alert_id for i in store.list_incidents(kind="sensor_silent")] == ["a3"]
    assert [i.alert_id for i in store.list_incidents(sensor_id="s1")] == ["a1"]
    assert {i.alert_id for i in store.list_incidents(include_test=False)} == {"a1", "a3"}
    assert len(store.list_incidents(limit=2)) == 2 and len(store.list_incidents(limit=2, offset=2)) == 1
    assert store.list_incidents(since=2e9) == []
    assert store.incident("a3").incident.location.label() == ""  # unknown sensor: no place, not an error
    with pytest.raises(ValueError, match="state must be one of"):
        store.list_incidents(state="bogus")
    assert [e.alert_id for e in store.events(since=T0 + 5)] == ["a2", "a3"]
    assert [e.alert_id for e in store.events(until=T0 + 5)] == ["a1"]
    assert [e.alert_id for e in store.events(sensor_id="s2")] == ["a2"]
    assert [e.test for e in store.events()] == [False, True, False]


def test_a_test_alarm_announced_first_marks_its_events_and_never_counts_as_unwanted(store):
    store.add_test_alarm("s1", starts_at=T0 - 1, ends_at=T0 + 60, by="ops")
    record(store, event("t1", sensor="s1", t=T0 + 1), 0)
    record(store, event("t1", state="cleared", sensor="s1", t=T0 + 120), 1)  # after the window: its incident's
    detail = store.incident("t1")
    assert detail.incident.test and all(e.test for e in detail.events)
    assert all(p.notification.test for p in store.due_deliveries("webhook", now=T0 + 200))
    store.acknowledge("t1", by="ops", outcome="test", at=T0 + 130)
    k = store.kpis(now=T0 + 200)
    assert k.unwanted_alarms_12m == 0 and k.acknowledged_12m == 0
    with pytest.raises(ValueError, match="ends_at"):
        store.add_test_alarm("s1", starts_at=T0, ends_at=T0, by="ops")


def test_kpis_count_unwanted_alarms_per_device_and_time_to_acknowledge(store):
    store.seed_sensors([SensorInfo(f"x{i}") for i in range(8)])  # 10 detectors in all
    outcomes = ["nuisance", "equipment_fault", "nuisance", "fire", "unknown"]
    for i in range(len(outcomes)):
        record(store, event(f"n{i}", sensor="s1", t=T0 + i), i)
    record(store, event("m0", sensor="s2"), 10)
    record(store, event("m1", sensor="s2", kind="sensor_stuck", severity="warning"), 11)
    opened = {i.alert_id: i.opened_at for i in store.list_incidents()}
    for i, outcome in enumerate(outcomes):
        store.acknowledge(f"n{i}", by="ana", outcome=outcome, at=opened[f"n{i}"] + 10.0 * (i + 1))
    store.acknowledge("m0", by="ana", outcome="nuisance", at=opened["m0"] + 60.0)
    store.acknowledge("m1", by="ana", outcome="nuisance", at=opened["m1"] + 70.0)  # not a fire: not counted
    record(store, event("open1", sensor="s2"), 12)
    k = store.kpis(now=max(opened.values()) + 100)
    assert k.detectors == 10
    assert k.unwanted_alarms_12m == 4
    assert k.unwanted_per_100_detectors_per_year == pytest.approx(40.0)
    assert [(d.sensor_id, d.unwanted_12m, d.flagged) for d in k.devices] == [("s1", 3, True), ("s2", 1, False)]
    assert k.flagged_devices == ["s1"]
    assert k.acknowledged_12m == 7
    assert k.ack_time_p50_s == pytest.approx(40.0, abs=0.5)
    assert k.ack_time_p95_s == pytest.approx(67.0, abs=0.5)
    assert (k.open_incidents, k.unacknowledged) == (8, 1)  # acknowledged but not cleared is still open
    assert k.deliveries["webhook"]["pending"] == 15 and k.deliveries["email"]["sent"] == 0
    assert store.kpis(now=max(opened.values()) + 400 * 86400).unwanted_alarms_12m == 0


def test_sensors_can_be_edited_and_the_file_only_seeds(store):
    assert store.sensor("s1").zone == "kitchen"
    store.upsert_sensor(SensorInfo("s1", site="HQ", building="B", floor="3", zone="canteen"))
    assert store.seed_sensors([SensorInfo("s1", zone="kitchen"), SensorInfo("s3", zone="attic")]) == 1
    assert store.sensor("s1").zone == "canteen"  # the edit stays
    assert [s.sensor_id for s in store.sensors()] == ["s1", "s2", "s3"]
    record(store, event(sensor="s1"), 0)
    assert store.incident("a1").incident.location.floor == "3"
    assert store.delete_sensor("s3") and not store.delete_sensor("s3") and store.sensor("s3") is None


def test_a_new_store_on_the_same_database_has_everything(store, dsn):
    record(store, event("a1"), 0)
    record(store, event("a2", sensor="s2"), 1)
    store.acknowledge("a1", by="ana", outcome="nuisance", note="toast", at=T0 + 9)
    silence = store.add_silence(SilenceSpec(site="HQ", starts_at=T0, ends_at=T0 + 60, created_by="ops"))
    store.close()
    again = AlertStore.open(dsn)  # the schema is at head: nothing to migrate
    try:
        assert {i.alert_id for i in again.list_incidents()} == {"a1", "a2"}
        assert again.incident("a1").acknowledgements[0].note == "toast"
        assert [s.id for s in again.silences()] == [silence.id]
        assert again.committed_offsets(TOPIC) == {0: 2}
        assert len(again.sensors()) == 2
    finally:
        again.close()


def test_an_acknowledgement_and_the_router_writing_at_once_both_land(store):
    record(store, event("a0"), 0)
    errors: list[BaseException] = []

    def router() -> None:
        try:
            for i in range(1, 40):
                record(store, event(f"b{i}", sensor="s2", t=T0 + i), i)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=router)
    thread.start()
    store.acknowledge("a0", by="ana", outcome="fire", at=T0 + 1)
    thread.join()
    assert errors == []
    assert store.committed_offsets(TOPIC) == {0: 40}
    assert store.incident("a0").incident.acknowledged
