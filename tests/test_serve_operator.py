"""The operator API on real Ray Serve, over real HTTP, against a real alert store (a SQLite file, and
PostgreSQL 15 on a free port): incidents (filters, paging, detail with events, evidence, acknowledgements
and deliveries), acknowledge and resolve, silences, sensors, KPIs, health and metrics; 404 for an unknown
id and 422 naming the field for bad input, with nothing written; API keys like the prediction API; the
OpenAPI description lists every route; a bounded fuzz of bodies and query strings never gets a 5xx.

Events are recorded in the store the way the router records them; the API runs as its own Serve
application under /ops beside whatever else Serve runs, as `smoke up` deploys it.
"""

from __future__ import annotations

import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.operator.deployment import deploy_operator
from tests.operator_support import (
    API_KEY,
    FIRE,
    SENSORS,
    STUCK,
    clear_alert,
    raise_alert,
    settings_for,
    sqlite_dsn,
    write_readings,
)
from tests.serve_support import free_port, start_serve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def dsn(request, tmp_path_factory) -> str:
    if request.param == "sqlite":
        return sqlite_dsn(tmp_path_factory.mktemp("operator-api"))
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture(scope="module")
def store(dsn):
    from alerting.store import AlertStore

    opened = AlertStore.open(dsn)
    for sensor in SENSORS:
        opened.upsert_sensor(sensor)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="module")
def lake_dir(dsn, tmp_path_factory):
    return tmp_path_factory.mktemp("operator-lake")  # one per store


@pytest.fixture(scope="module")
def base_url(ray_cluster, store, dsn, lake_dir):
    from ray import serve

    port = free_port()
    start_serve(port)
    settings = settings_for(dsn, port, [API_KEY], lake_dir=lake_dir)
    url = deploy_operator(settings, overrides={"num_replicas": 1})
    try:
        yield url
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=30, headers={"X-API-Key": API_KEY}) as c:
        yield c


def assert_error(response: httpx.Response, status: int, field: str | None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status_code"] == status and body["error"]
    if field is not None:
        assert field in body["error"], body
        assert any(e["field"] == field for e in body["errors"]), body
    return body


def test_health_and_auth(base_url, client):
    r = httpx.get(f"{base_url}/health")  # open, like the prediction API's
    assert r.status_code == 200 and r.json()["status"] == "healthy" and r.json()["store"] == "ok"
    assert httpx.get(f"{base_url}/incidents").status_code == 401
    r = httpx.get(f"{base_url}/incidents", headers={"X-API-Key": "wrong"})
    assert r.status_code == 403 and "incidents" not in r.text
    assert httpx.get(f"{base_url}/incidents", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_incidents_list_filters_and_paging(store, client):
    # An incident's time in the store is when it was first recorded: split the history with a pause.
    old = raise_alert(store, "op-lobby", FIRE, started=time.time() - 3 * 3600)
    time.sleep(1.2)
    split = time.time()
    fire = raise_alert(store, "op-kitchen", FIRE)
    stuck = raise_alert(store, "op-store", STUCK)
    page = client.get("/incidents", params={"state": "open", "limit": 200}).json()
    ids = {i["alert_id"] for i in page["incidents"]}
    assert {fire.alert_id, stuck.alert_id, old.alert_id} <= ids
    by_id = {i["alert_id"]: i for i in page["incidents"]}
    kitchen = by_id[fire.alert_id]
    assert kitchen["location"]["label"] == "HQ, B, floor 2, kitchen, by the hob"
    assert kitchen["kind"] == "fire" and kitchen["severity"] == "critical" and kitchen["open"] is True
    assert kitchen["state"] == "raised" and kitchen["acknowledged_by"] is None

    def ids_of(**params) -> set[str]:
        r = client.get("/incidents", params={"limit": 200, **params})
        assert r.status_code == 200, r.text
        return {i["alert_id"] for i in r.json()["incidents"]}

    assert stuck.alert_id in ids_of(kind="sensor_stuck") and fire.alert_id not in ids_of(kind="sensor_stuck")
    assert ids_of(zone="kitchen") >= {fire.alert_id} and stuck.alert_id not in ids_of(zone="kitchen")
    assert stuck.alert_id in ids_of(site="Depot") and fire.alert_id not in ids_of(site="Depot")
    assert {old.alert_id, fire.alert_id} <= ids_of(since="1h")
    assert old.alert_id not in ids_of(since=repr(split)) and fire.alert_id in ids_of(since=repr(split))
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(split))
    assert old.alert_id in ids_of(until=iso) and fire.alert_id not in ids_of(until=iso)
    assert old.alert_id in ids_of(sensor_id="op-lobby") and fire.alert_id not in ids_of(sensor_id="op-lobby")

    first = client.get("/incidents", params={"limit": 2}).json()
    assert len(first["incidents"]) == 2 and first["next_offset"] == 2
    rest = client.get("/incidents", params={"limit": 2, "offset": 2}).json()
    assert not {i["alert_id"] for i in first["incidents"]} & {i["alert_id"] for i in rest["incidents"]}


def test_incidents_bad_queries_name_the_field(client):
    assert_error(client.get("/incidents", params={"since": "yesterday-ish"}), 422, "since")
    assert_error(client.get("/incidents", params={"kind": "flood"}), 422, "kind")
    assert_error(client.get("/incidents", params={"state": "burning"}), 422, "state")
    assert_error(client.get("/incidents", params={"limit": 0}), 422, "limit")
    assert_error(client.get("/incidents", params={"limit": 10_000_000}), 422, "limit")


def test_detail_ack_and_resolve(store, client):
    fire = raise_alert(store, "op-kitchen", FIRE)
    detail = client.get(f"/incidents/{fire.alert_id}").json()
    assert detail["incident"]["alert_id"] == fire.alert_id
    assert [e["state"] for e in detail["events"]] == ["raised"]
    event = detail["events"][0]
    assert event["evidence"]["channels"] == ["heat", "particles"] and event["topic"] == "smoke_alerts"
    assert event["evidence"]["detectors"]["thresholds"]["pm2_5_ugm3"] == {"observed": 182.0, "threshold": 35.0}
    assert detail["acknowledgements"] == [] and isinstance(detail["deliveries"], list)

    # Resolving before anyone acknowledged is refused by the lifecycle: 409, nothing written.
    assert_error(client.post(f"/incidents/{fire.alert_id}/resolve", json={"by": "ana"}), 409, "state")

    r = client.post(f"/incidents/{fire.alert_id}/ack", json={"by": "ana", "outcome": "nuisance", "note": "toast"})
    assert r.status_code == 200, r.text
    assert r.json()["acknowledged_by"] == "ana" and r.json()["outcome"] == "nuisance"
    incident = store.incident(fire.alert_id).incident
    assert incident.acknowledged_by == "ana" and incident.outcome == "nuisance" and incident.ack_note == "toast"
    acks = client.get(f"/incidents/{fire.alert_id}").json()["acknowledgements"]
    assert [(a["by"], a["outcome"], a["note"]) for a in acks] == [("ana", "nuisance", "toast")]
    assert_error(client.post(f"/incidents/{fire.alert_id}/ack", json={"by": "bo", "outcome": "fire"}), 409, "state")

    clear_alert(store, fire)
    assert client.get(f"/incidents/{fire.alert_id}").json()["incident"]["open"] is False
    r = client.post(f"/incidents/{fire.alert_id}/resolve", json={"by": "ana", "note": "cleaned the toaster"})
    assert r.status_code == 200 and r.json()["state"] == "resolved" and r.json()["resolved_by"] == "ana"
    assert fire.alert_id not in {i["alert_id"] for i in client.get("/incidents", params={"state": "open"})
                                 .json()["incidents"]}


def test_readings_around_an_incident_from_the_lake(store, client, lake_dir):
    now = time.time()
    write_readings(lake_dir, "op-kitchen", now - 900, 900, fire_from=now - 120)
    fire = raise_alert(store, "op-kitchen", FIRE, started=now - 60)
    body = client.get(f"/incidents/{fire.alert_id}/readings", params={"before_s": 300, "after_s": 0}).json()
    assert body["sensor_id"] == "op-kitchen" and body["raised_at"] == pytest.approx(now - 57)
    assert body["note"] is None and "pm2_5_ugm3" in body["channels"]
    ts = body["timestamps"]
    assert len(ts) > 250 and ts == sorted(ts) and ts[0] >= body["start"] and ts[-1] < body["end"]
    pm = dict(zip(ts, body["values"]["pm2_5_ugm3"], strict=True))
    assert pm[min(ts)] == 5.0 and max(pm.values()) > 100  # the rise is in the window
    thinned = client.get(f"/incidents/{fire.alert_id}/readings", params={"max_points": 50}).json()
    assert len(thinned["timestamps"]) == 50
    other = raise_alert(store, "op-store", FIRE)
    empty = client.get(f"/incidents/{other.alert_id}/readings").json()
    assert empty["timestamps"] == [] and "no readings of op-store" in empty["note"]
    assert_error(client.get("/incidents/0123456789abcdef/readings"), 404, "alert_id")
    assert_error(client.get(f"/incidents/{fire.alert_id}/readings", params={"max_points": 1}), 422, "max_points")


def test_fleet_by_zone_with_last_reading_age_and_trouble(store, client, lake_dir):
    now = time.time()
    write_readings(lake_dir, "op-lobby", now - 60, 50, fire_from=now + 10)
    raise_alert(store, "op-store", STUCK)
    body = client.get("/fleet", params={"window_s": 300}).json()
    assert body["note"] is None
    zones = {(z["site"], z["zone"]): z["sensors"] for z in body["zones"]}
    [lobby] = zones[("HQ", "lobby")]
    assert lobby["label"] == "HQ, A, floor 0, lobby" and lobby["trusted"] is True
    assert 5 <= lobby["age_s"] < 300 and lobby["trouble"] == []
    [depot] = zones[("Depot", "store room")]
    assert "sensor_stuck" in depot["trouble"] and depot["trusted"] is False
    if depot["last_reading_at"] is None:
        assert depot["age_s"] is None  # no reading in the window: no age, never 0
    assert_error(client.get("/fleet", params={"window_s": 1}), 422, "window_s")


def test_unknown_incident_is_404_and_bad_ack_is_422_with_nothing_written(store, client):
    before = store.events(limit=100_000)
    assert_error(client.get("/incidents/0123456789abcdef"), 404, "alert_id")
    assert_error(client.post("/incidents/0123456789abcdef/ack", json={"by": "ana", "outcome": "fire"}), 404,
                 "alert_id")
    assert_error(client.post("/incidents/0123456789abcdef/resolve", json={"by": "ana"}), 404, "alert_id")
    fire = raise_alert(store, "op-lobby", FIRE)
    assert_error(client.post(f"/incidents/{fire.alert_id}/ack", json={"by": "ana", "outcome": "probably"}), 422,
                 "outcome")
    assert_error(client.post(f"/incidents/{fire.alert_id}/ack", json={"by": "", "outcome": "fire"}), 422, "by")
    assert_error(client.post(f"/incidents/{fire.alert_id}/ack", json={"outcome": "fire"}), 422, "by")
    assert_error(client.post(f"/incidents/{fire.alert_id}/ack", json={"by": "a", "outcome": "fire", "whom": 1}),
                 422, "whom")
    r = client.post(f"/incidents/{fire.alert_id}/ack", content=b"{not json", headers={"Content-Type":
                                                                                        "application/json"})
    assert 400 <= r.status_code < 500
    incident = store.incident(fire.alert_id)
    assert incident.incident.acknowledged_at is None and incident.acknowledgements == []
    assert len(store.events(limit=100_000)) == len(before) + 1  # only the raised event recorded above


def test_silences_crud_and_invalid_ones_write_nothing(store, client):
    r = client.post("/silences", json={"zone": "kitchen", "duration_s": 7200, "comment": "hob works",
                                       "created_by": "ana"})
    assert r.status_code == 201, r.text
    silence = r.json()
    assert silence["zone"] == "kitchen" and silence["active"] is True
    assert silence["ends_at"] == pytest.approx(silence["starts_at"] + 7200)
    assert silence["id"] in {s["id"] for s in client.get("/silences", params={"active": True}).json()["silences"]}

    # A fire in the silenced zone is recorded and shown, marked silenced.
    fire = raise_alert(store, "op-kitchen", FIRE)
    shown = client.get(f"/incidents/{fire.alert_id}").json()["incident"]
    assert shown["silenced"] is True

    count = len(store.silences())
    now = time.time()
    bad = [
        ({"duration_s": 60, "comment": "x", "created_by": "ana"}, "matchers"),
        ({"zone": "kitchen", "comment": "x", "created_by": "ana"}, "ends_at"),
        ({"zone": "kitchen", "starts_at": now, "ends_at": now - 10, "comment": "x", "created_by": "ana"}, "ends_at"),
        ({"zone": "kitchen", "ends_at": now - 10, "comment": "x", "created_by": "ana"}, "ends_at"),
        ({"zone": "kitchen", "duration_s": -5, "comment": "x", "created_by": "ana"}, "duration_s"),
        ({"kind": "flood", "duration_s": 60, "comment": "x", "created_by": "ana"}, "kind"),
        ({"zone": "kitchen", "duration_s": 60, "comment": "", "created_by": "ana"}, "comment"),
        ({"zone": "kitchen", "duration_s": 60, "comment": "x"}, "created_by"),
        ({"zone": "", "duration_s": 60, "comment": "x", "created_by": "ana"}, "zone"),
    ]
    for body, field in bad:
        assert_error(client.post("/silences", json=body), 422, field)
    assert len(store.silences()) == count

    assert client.delete(f"/silences/{silence['id']}").json() == {"deleted": str(silence["id"])}
    assert_error(client.delete(f"/silences/{silence['id']}"), 404, "silence_id")
    assert silence["id"] not in {s["id"] for s in client.get("/silences").json()["silences"]}


def test_sensors_crud(client):
    listed = {s["sensor_id"]: s for s in client.get("/sensors").json()["sensors"]}
    assert listed["op-lobby"]["label"] == "HQ, A, floor 0, lobby"
    r = client.put("/sensors/op-new-1", json={"site": "HQ", "building": "C", "floor": "3", "zone": "server room"})
    assert r.status_code == 200 and r.json()["label"] == "HQ, C, floor 3, server room"
    assert client.get("/sensors/op-new-1").json()["zone"] == "server room"
    assert_error(client.put("/sensors/op-new-1", json={"zone": "x", "room": "y"}), 422, "room")
    assert client.delete("/sensors/op-new-1").status_code == 200
    assert_error(client.get("/sensors/op-new-1"), 404, "sensor_id")
    assert_error(client.delete("/sensors/op-new-1"), 404, "sensor_id")


def test_kpis_and_metrics(store, client):
    fire = raise_alert(store, "op-store", FIRE)
    client.post(f"/incidents/{fire.alert_id}/ack", json={"by": "ana", "outcome": "equipment_fault"})
    kpis = client.get("/kpis").json()
    assert kpis["detectors"] >= len(SENSORS)
    assert kpis["unwanted_alarms_12m"] >= 1 and kpis["unwanted_per_100_detectors_per_year"] > 0
    assert kpis["ack_time_p50_s"] is not None and kpis["unacknowledged"] >= 1
    assert "op-store" in {d["sensor_id"] for d in kpis["devices"]}
    text = client.get("/metrics").text
    assert 'smoke_operator_requests_total{' in text and 'outcome="equipment_fault"' in text
    assert "smoke_alert_unwanted_per_100_detectors_per_year " in text
    assert "smoke_alert_incidents_unacknowledged " in text
    assert 'smoke_alert_ack_time_seconds{quantile="0.5"}' in text


def test_kpis_exported_as_ray_metrics(store, client, ray_cluster):
    # The replica publishes the KPIs as Ray gauges every few seconds (Prometheus scrapes them with Ray's).
    assert client.get("/kpis").json()["unacknowledged"] >= 1
    port = ray_cluster.head_node.metrics_export_port
    wanted = ("ray_smoke_alert_incidents_unacknowledged{", "ray_smoke_alert_incidents_open{",
              "ray_smoke_alert_devices_flagged{", 'quantile="0.5"')
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline and not all(w in text for w in wanted):
        time.sleep(2)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert [w for w in wanted if w not in text] == [], f"not exported at :{port}/metrics"
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("ray_smoke_alert_incidents_unacknowledged{")]
    assert max(values) >= 1


def test_openapi_describes_every_route(base_url):
    spec = httpx.get(f"{base_url}/openapi.json").json()
    paths = spec["paths"]
    for path, methods in {"/incidents": {"get"}, "/incidents/{alert_id}": {"get"},
                          "/incidents/{alert_id}/ack": {"post"}, "/incidents/{alert_id}/resolve": {"post"},
                          "/incidents/{alert_id}/readings": {"get"},
                          "/silences": {"get", "post"}, "/silences/{silence_id}": {"delete"},
                          "/sensors": {"get"}, "/sensors/{sensor_id}": {"get", "put", "delete"}, "/fleet": {"get"},
                          "/kpis": {"get"}, "/health": {"get"}, "/metrics": {"get"}}.items():
        assert methods <= set(paths[path]), path
    ack = paths["/incidents/{alert_id}/ack"]["post"]
    assert {"200", "404", "409", "422"} <= set(ack["responses"])
    assert "IncidentOut" in str(ack["responses"]["200"])


def test_serve_yaml_deploys_the_operator_api_and_console_where_the_settings_say():
    import yaml
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from ingest.settings import REPO_ROOT, AlertingSettings
    from serve.console.app import app_builder as console_builder
    from serve.operator.app import app_builder as operator_builder

    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO_ROOT / "configs" / "serve.yaml").read_text()))
    apps = {a.import_path: a for a in config.applications}
    defaults = AlertingSettings()
    operator = apps["serve.operator.app:app_builder"]
    console = apps["serve.console.app:app_builder"]
    assert (operator.name, operator.route_prefix) == (defaults.operator_app_name, defaults.operator_route_prefix)
    assert (console.name, console.route_prefix) == (defaults.console_app_name, defaults.console_route_prefix)
    assert config.applications[0].import_path == "serve.app:app_builder"  # the prediction app stays first
    assert isinstance(operator_builder(dict(operator.args)), Application)
    assert isinstance(console_builder(dict(console.args)), Application)
    with pytest.raises(ValueError, match="unknown_key"):
        operator_builder({"unknown_key": 1})


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                       max_leaves=8)
_fields = st.sampled_from(["by", "outcome", "note", "sensor_id", "zone", "site", "kind", "starts_at", "ends_at",
                           "duration_s", "created_by", "comment", "building", "floor", "description", "x"])
_bodies = st.one_of(st.dictionaries(_fields, _values, max_size=8), _values)
_writes = st.sampled_from(["/incidents/{id}/ack", "/incidents/{id}/resolve", "/silences", "/sensors/fuzz-1"])
_queries = st.dictionaries(st.sampled_from(["state", "since", "until", "kind", "zone", "site", "sensor_id", "limit",
                                            "offset", "include_test", "active"]),
                           st.text(max_size=20), max_size=5)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=_writes, body=_bodies)
def test_fuzz_bodies_never_5xx(store, client, path, body):
    alert = store.list_incidents(limit=1)
    target = path.format(id=alert[0].alert_id if alert else "none")
    method = "PUT" if target.startswith("/sensors") else "POST"
    r = client.request(method, target, json=body)
    assert r.status_code < 500, (target, body, r.text)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(["/incidents", "/silences", "/sensors", "/incidents/x", "/kpis"]), params=_queries)
def test_fuzz_queries_never_5xx(client, path, params):
    r = client.get(path, params=params)
    assert r.status_code < 500, (path, params, r.text)
