"""Helpers shared by the operator API, CLI and console tests: a real SQLite alert store, events recorded in
it as the router records them (topic position and all), and the operator API and console deployed on real
Serve. Nothing here is a fake.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

from alerting.sensors import SensorInfo
from ingest.alert_message import CLEARED, CRITICAL, FIRE, RAISED, SILENT, STUCK, WARNING, AlertEvent, alert_id
from ingest.settings import Settings, load_settings

TOPIC = "smoke_alerts"
API_KEY = "operator-test-key"

SENSORS = [
    SensorInfo("op-kitchen", site="HQ", building="B", floor="2", zone="kitchen", description="by the hob"),
    SensorInfo("op-lobby", site="HQ", building="A", floor="0", zone="lobby"),
    SensorInfo("op-store", site="Depot", building="W", floor="1", zone="store room"),
]

FIRE_EVIDENCE = {"detectors": {"thresholds": {"pm2_5_ugm3": {"observed": 182.0, "threshold": 35.0}},
                               "model": {"probability": {"observed": 0.97, "threshold": 0.5}}},
                 "channels": ["heat", "particles"], "rule": "3 of 5 readings anomalous"}

_offsets = itertools.count()


def settings_for(dsn: str, port: int, api_keys: list[str] | None = None, lake_dir: Path | None = None) -> Settings:
    base = load_settings(environ={})
    update = {
        "serve": base.serve.model_copy(update={"host": "127.0.0.1", "port": port, "api_keys": api_keys or []}),
        "alerting": base.alerting.model_copy(update={"store_dsn": dsn, "console_poll_s": 0.25}),
    }
    if lake_dir is not None:
        update["stream"] = base.stream.model_copy(update={"lake_dir": str(lake_dir)})
    return base.model_copy(update=update)


def write_readings(lake_dir: Path, sensor_id: str, start: float, seconds: int, fire_from: float) -> None:
    """A sensor's readings (one a second) in the Parquet lake as the stream writes them; from ``fire_from``
    on the particles and the heat rise."""
    import numpy as np
    import pandas as pd

    from ingest.lake import stream_key, write_lake_file
    from ingest.schema import MEASUREMENTS

    t = start + np.arange(seconds, dtype=float)
    burning = t >= fire_from
    frame = pd.DataFrame({"sensor_id": sensor_id, "timestamp": t,
                          **{m: np.full(seconds, 1.0) for m in MEASUREMENTS}})
    frame["temperature_c"] = np.where(burning, 21.0 + (t - fire_from) * 0.2, 21.0)
    frame["pm2_5_ugm3"] = np.where(burning, 5.0 + (t - fire_from) * 3.0, 5.0)
    frame["humidity_pct"] = 45.0
    write_lake_file(lake_dir, stream_key(0, int(start), int(start) + seconds), frame)


def sqlite_dsn(directory: Path) -> str:
    return f"sqlite:///{directory / 'alerts.db'}"


@dataclass(frozen=True)
class Recorded:
    alert_id: str
    sensor_id: str
    kind: str


def raise_alert(store, sensor_id: str, kind: str = FIRE, *, started: float | None = None,
                evidence: dict | None = None, partition: int = 0) -> Recorded:
    """Record a raised event as the router would (with a topic position), returning its ids."""
    t0 = time.time() if started is None else started
    aid = alert_id(sensor_id, kind, t0)
    severity = CRITICAL if kind == FIRE else WARNING
    event = AlertEvent(aid, sensor_id, kind, severity, RAISED, t0 + 3.0, time.time(), 2.5,
                       "v0001" if kind == FIRE else None,
                       evidence if evidence is not None else (FIRE_EVIDENCE if kind == FIRE else {
                           "signals": {"temperature_c": {"identical_readings": 300, "value": 21.5}}}))
    assert store.record_event(event, topic=TOPIC, partition=partition, offset=next(_offsets),
                              arrival_time=time.time())
    return Recorded(aid, sensor_id, kind)


def clear_alert(store, recorded: Recorded, partition: int = 0) -> None:
    now = time.time()
    event = AlertEvent(recorded.alert_id, recorded.sensor_id, recorded.kind, "info", CLEARED, now, now, 0.0, None, {})
    assert store.record_event(event, topic=TOPIC, partition=partition, offset=next(_offsets), arrival_time=now)


__all__ = ["API_KEY", "FIRE", "SENSORS", "SILENT", "STUCK", "Recorded", "clear_alert", "raise_alert",
           "settings_for", "sqlite_dsn"]
