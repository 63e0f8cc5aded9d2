"""``smoke alerts``: the operator's commands through the CLI's entry point (``cluster.cli.main``, settings
from the environment as a user sets them) against a real alert store (a SQLite file, and PostgreSQL 15 on a
free port) written the way the router writes it. Each command opens the store anew, so what they show is
what survives a restart.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

from tests.operator_support import FIRE, SENSORS, STUCK, raise_alert, sqlite_dsn


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(params=["sqlite", "postgresql"])
def dsn(request, tmp_path) -> str:
    if request.param == "sqlite":
        return sqlite_dsn(tmp_path)
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
def store_env(dsn, tmp_path, monkeypatch, capsys):
    """An alert store, and ``smoke(*args)`` running ``smoke alerts ARGS`` with the settings pointing at it."""
    from alerting.store import AlertStore
    from cluster.cli import main

    store = AlertStore.open(dsn)
    for sensor in SENSORS:
        store.upsert_sensor(sensor)
    monkeypatch.setenv("SMOKE_ALERTING__STORE_DSN", dsn)
    monkeypatch.setenv("SMOKE_RAY__RUN_DIR", str(tmp_path / "run"))  # no running stack is attached
    monkeypatch.setenv("COLUMNS", "200")  # rich tables at a width that does not fold the names

    def smoke(*args: str) -> Run:
        capsys.readouterr()
        try:
            code = main(["alerts", *args])
        except SystemExit as exit_:  # argparse refusing an option
            code = int(exit_.code or 0)
        out = capsys.readouterr()
        return Run(code, out.out, out.err)

    try:
        yield store, smoke
    finally:
        store.close()


def test_list_history_show_ack_resolve(store_env):
    store, smoke = store_env
    # An incident's time in the store is when it was first recorded: split the history with a pause.
    old = raise_alert(store, "op-lobby", FIRE, started=time.time() - 5 * 3600)
    time.sleep(1.2)
    split = time.time()
    fire = raise_alert(store, "op-kitchen", FIRE)
    stuck = raise_alert(store, "op-store", STUCK)
    store.close()  # the commands open the store themselves

    listed = smoke("--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["alert_id"] for r in rows][:2] == [old.alert_id, fire.alert_id]  # fire first, the oldest first
    assert rows[-1]["alert_id"] == stuck.alert_id
    table = smoke()
    assert table.returncode == 0 and "kitchen" in table.stdout and "sensor_stuck" in table.stdout

    def history(*args: str) -> set[str]:
        done = smoke("history", *args, "--json")
        assert done.returncode == 0, done.stderr
        return {r["alert_id"] for r in json.loads(done.stdout)}

    assert history("--since", "2h") == {old.alert_id, fire.alert_id, stuck.alert_id}
    assert history("--since", repr(split)) == {fire.alert_id, stuck.alert_id}
    assert history("--since", "2h", "--until", repr(split)) == {old.alert_id}
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    assert history("--since", iso, "--zone", "kitchen") == {fire.alert_id}
    assert history("--kind", "sensor_stuck") == {stuck.alert_id}
    bad = smoke("history", "--since", "last tuesday")
    assert bad.returncode == 2 and "--since" in bad.stderr

    ack = smoke("ack", fire.alert_id, "--by", "ana", "--outcome", "nuisance", "--note", "burnt toast")
    assert ack.returncode == 0, ack.stderr
    assert "acknowledged by ana (nuisance)" in ack.stdout
    shown = smoke("show", fire.alert_id)
    assert shown.returncode == 0 and "acknowledged by ana: nuisance burnt toast" in shown.stdout
    assert "particles" in shown.stdout  # the evidence of the raised event

    again = smoke("ack", fire.alert_id, "--by", "bo", "--outcome", "fire")
    assert again.returncode == 2 and "acknowledged already" in again.stderr
    early = smoke("resolve", stuck.alert_id, "--by", "ana")
    assert early.returncode == 2 and "acknowledge" in early.stderr
    resolved = smoke("resolve", fire.alert_id, "--by", "ana", "--note", "cleaned")
    assert resolved.returncode == 0 and "resolved" in resolved.stdout
    assert fire.alert_id not in {r["alert_id"] for r in json.loads(smoke("--json").stdout)}


def test_unknown_id_and_bad_outcome_write_nothing(store_env):
    store, smoke = store_env
    fire = raise_alert(store, "op-kitchen", FIRE)
    unknown = smoke("ack", "0123456789abcdef", "--by", "ana", "--outcome", "fire")
    assert unknown.returncode == 1 and "no incident 0123456789abcdef" in unknown.stderr
    bad = smoke("ack", fire.alert_id, "--by", "ana", "--outcome", "probably")
    assert bad.returncode == 2 and "--outcome" in bad.stderr
    assert smoke("show", "0123456789abcdef").returncode == 1
    detail = store.incident(fire.alert_id)
    assert detail.incident.acknowledged_at is None and detail.acknowledgements == []


def test_silence_silences_unsilence_and_sensors(store_env):
    store, smoke = store_env
    made = smoke("silence", "--zone", "kitchen", "--for", "2h", "--comment", "hob works", "--by", "ana")
    assert made.returncode == 0, made.stderr
    assert "zone=kitchen" in made.stdout
    [silence] = store.silences(active_at=time.time())
    assert silence.zone == "kitchen" and silence.created_by == "ana" and silence.comment == "hob works"
    assert silence.ends_at - silence.starts_at == pytest.approx(7200)
    assert raise_alert(store, "op-kitchen", FIRE) and store.list_incidents(zone="kitchen")[0].silenced

    listed = json.loads(smoke("silences", "--json").stdout)
    assert [s["id"] for s in listed] == [silence.id]

    for args, option in [(("--for", "2h", "--comment", "x", "--by", "ana"), "--sensor/--zone/--site/--kind"),
                         (("--zone", "kitchen", "--for", "soon", "--comment", "x", "--by", "ana"), "--for"),
                         (("--zone", "kitchen", "--for", "2h", "--comment", "", "--by", "ana"), "--comment"),
                         (("--zone", "kitchen", "--for", "2h", "--comment", "x", "--by", "ana",
                           "--starts", "2001-01-01T00:00:00Z"), "--for")]:
        refused = smoke("silence", *args)
        assert refused.returncode == 2 and option in refused.stderr, (args, refused.stderr)
    assert len(store.silences()) == 1

    assert smoke("unsilence", str(silence.id)).returncode == 0
    assert smoke("unsilence", str(silence.id)).returncode == 1
    assert smoke("silences").stdout.strip() == "silences in force: none"

    sensors = json.loads(smoke("sensors", "--json").stdout)
    assert {s["sensor_id"]: s["zone"] for s in sensors}["op-kitchen"] == "kitchen"
    assert "store room" in smoke("sensors").stdout
