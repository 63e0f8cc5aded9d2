"""The detection engine end to end on feature batches: alerts, hysteresis, ids, state and models.

Readings go through the real :func:`train.features.compute_features`, one
reading per sensor per second, exactly as a partition worker calls the engine.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable

import numpy as np
import orjson
import pytest
from sklearn.linear_model import LogisticRegression

from actors.detection import DetectionEngine, SnapshotError
from ingest.alert_message import AlertEvent
from ingest.schema import MEASUREMENTS
from ingest.settings import DetectionSettings, FusionSettings, SilentSettings, StuckSettings
from train.features import FEATURE_NAMES, POINT_FEATURES, FeatureState, compute_features

T0 = 1_750_000_000.0
# Quiet indoor air, in MEASUREMENTS order.
BASE = np.array([21.0, 45.0, 120.0, 405.0, 13000.0, 19950.0, 938.6, 1.0, 1.3, 6.5, 1.3, 0.05])
# What a median flaming fire adds at full intensity: heat, dry air, gases, fine smoke (PM2.5/PM1 = 1.25).
FIRE = np.array([15.0, -8.0, 3000.0, 600.0, -400.0, -500.0, 0.0, 300.0, 375.0, 1950.0, 390.0, 15.0])
# Cooking steam: humidity, a little warmth and ethanol, coarse droplets (PM2.5/PM1 = 2.8), no combustion gas.
STEAM = np.array([2.0, 18.0, 20.0, 10.0, -10.0, -200.0, 0.0, 15.0, 42.0, 37.0, 39.0, 24.0])

Effect = Callable[[str, float], np.ndarray]


def level(t: float, start: float, rise: float = 30.0, hold: float = 60.0, decay: float = 30.0) -> float:
    """0 -> 1 over ``rise`` s, ``hold`` s at 1, back to 0 over ``decay`` s."""
    x = t - start
    if x < 0 or x > rise + hold + decay:
        return 0.0
    if x < rise:
        return x / rise
    if x < rise + hold:
        return 1.0
    return 1.0 - (x - rise - hold) / decay


class Fleet:
    """Sensors with noisy quiet air plus effects, fed through features and an engine one second at a time."""

    def __init__(self, sensors: list[str], seed: int = 0) -> None:
        self.sensors = sensors
        self.rng = np.random.default_rng(seed)

    def values(self, t: float, effect: Effect | None) -> np.ndarray:
        n = len(self.sensors)
        noise = np.column_stack([
            self.rng.normal(0, 0.05, n), self.rng.normal(0, 0.25, n), np.ones((n, 1))[:, 0],
            self.rng.normal(0, 0.5, n), self.rng.normal(0, 4, n), self.rng.normal(0, 8, n),
            self.rng.normal(0, 0.02, n)])
        values = np.tile(BASE, (n, 1))
        values[:, :7] += noise
        values[:, 2] *= self.rng.lognormal(0, 0.08, n)
        values[:, 7:] *= self.rng.lognormal(0, 0.1, (n, 1))
        if effect is not None:
            for i, sensor in enumerate(self.sensors):
                values[i] += effect(sensor, t)
        return np.round(values, 3)

    def run(self, engine: DetectionEngine, start: float, seconds: int, effect: Effect | None = None,
            only: list[str] | None = None) -> list[AlertEvent]:
        alerts: list[AlertEvent] = []
        for k in range(seconds):
            t = start + k
            values = self.values(t, effect)
            ids = self.sensors if only is None else only
            rows = [self.sensors.index(s) for s in ids]
            stamps = np.full(len(ids), t)
            alerts += engine.process(ids, stamps, values[rows], stamps)[1]
        return alerts


def fire_on(sensor: str, start: float, kind: np.ndarray = FIRE) -> Effect:
    return lambda s, t: kind * level(t, start) if s == sensor else np.zeros(len(MEASUREMENTS))


def engine(settings: DetectionSettings | None = None, model=None) -> DetectionEngine:
    return DetectionEngine(settings or DetectionSettings(), model, clock=lambda: 1.0)


def summary(alerts: list[AlertEvent]) -> list[tuple]:
    return [(a.sensor_id, a.kind, a.state, a.alert_id, a.event_time, a.severity) for a in alerts]


def test_one_fire_gives_one_raised_and_one_cleared_alert_although_several_detectors_fire():
    fleet, eng = Fleet(["s0", "s1", "s2"]), engine()
    assert fleet.run(eng, T0, 120) == []
    alerts = fleet.run(eng, T0 + 120, 260, fire_on("s1", T0 + 120))
    assert [(a.sensor_id, a.kind, a.state) for a in alerts] == [("s1", "fire", "raised"), ("s1", "fire", "cleared")]
    raised, cleared = alerts
    assert raised.alert_id == cleared.alert_id
    assert 0 < raised.event_time - (T0 + 120) <= 10, "flaming fire must be detected within seconds"
    assert len(raised.evidence["detectors"]) >= 2 and len(raised.evidence["channels"]) >= 2
    assert raised.evidence["incident_start"] <= raised.event_time
    # Clears after the fire's end (120 s) plus clear_m normal readings, not while it burns.
    assert cleared.event_time > T0 + 120 + 120


def test_replaying_the_same_input_gives_the_same_alert_ids():
    def once(clock_value: float) -> list[tuple]:
        fleet = Fleet(["s0", "s1"], seed=3)
        eng = DetectionEngine(DetectionSettings(), clock=lambda: clock_value)
        return summary(fleet.run(eng, T0, 400, fire_on("s0", T0 + 150)))

    first = once(1.0)
    assert first and first == once(99.0)


def test_cooking_steam_does_not_page():
    fleet, eng = Fleet(["kitchen"], seed=4), engine()
    fleet.run(eng, T0, 120)
    alerts = fleet.run(eng, T0 + 120, 300, fire_on("kitchen", T0 + 120, STEAM))
    assert [a for a in alerts if a.kind == "fire"] == []


def test_snapshot_restore_gives_identical_subsequent_output():
    fleet, a = Fleet(["s0", "s1", "s2"], seed=5), engine()
    effect = fire_on("s2", T0 + 100)
    fleet.run(a, T0, 160, effect)  # stop in the middle of the fire: fusion state matters
    assert a.fusions["fire"].raised(np.array([a.slots["s2"]]))[0]
    snapshot = a.snapshot()
    assert json.dumps(snapshot) == json.dumps(a.snapshot()), "snapshot must be deterministic"
    restored_json = DetectionEngine.restore(DetectionSettings(), json.loads(json.dumps(snapshot)), clock=lambda: 1.0)
    restored_pickle = DetectionEngine.restore(DetectionSettings(), pickle.loads(pickle.dumps(snapshot)),
                                              clock=lambda: 1.0)
    twins = [copy.deepcopy(fleet) for _ in range(2)]
    expected = summary(fleet.run(a, T0 + 160, 200, effect))
    assert [x[2] for x in expected if x[0] == "s2"] == ["cleared"]
    for twin, eng in zip(twins, (restored_json, restored_pickle), strict=True):
        assert summary(twin.run(eng, T0 + 160, 200, effect)) == expected
        assert json.dumps(eng.snapshot()) == json.dumps(a.snapshot())


def test_evict_and_import_round_trip_continues_as_if_never_evicted():
    fleet, kept, moved = Fleet(["s0", "s1"], seed=6), engine(), engine()
    effect = fire_on("s0", T0 + 100)
    twin = copy.deepcopy(fleet)
    fleet.run(kept, T0, 150, effect)
    twin.run(moved, T0, 150, effect)
    data = moved.evict("s0")
    assert "s0" not in moved.slots and "s0" not in moved.idle_sensors(T0 + 1e6, 1.0)
    # The freed slot goes to a new sensor, which starts from scratch (nothing leaks from s0).
    moved.process(["new"], np.array([T0 + 150.0]), BASE[None, :], np.array([T0 + 150.0]))
    assert moved.export_sensor("new")["detectors"]["zscore"]["count"] == 1
    assert moved.export_sensor("new")["features"]["count"] == 1
    moved.import_sensor("s0", json.loads(json.dumps(data)))
    expected = summary(fleet.run(kept, T0 + 150, 150, effect))
    assert [x[2] for x in expected] == ["cleared"]
    assert summary(twin.run(moved, T0 + 150, 150, effect)) == expected


def test_import_refuses_state_from_other_settings():
    fleet, eng = Fleet(["s0"]), engine()
    fleet.run(eng, T0, 5)
    data = eng.export_sensor("s0")
    fewer = DetectionSettings(stuck=StuckSettings(signals=["temperature_c"]))
    with pytest.raises(SnapshotError, match="settings"):
        engine(fewer).import_sensor("s0", data)
    with pytest.raises(SnapshotError, match="format"):
        DetectionEngine.restore(DetectionSettings(), {"format": 99, "sensors": {}})
    with pytest.raises(KeyError, match="no detection state"):
        eng.evict("unknown")


def test_silent_sensor_fires_on_the_timer_once_and_clears_when_it_sends_again():
    settings = DetectionSettings(silent=SilentSettings(after_s=120.0))
    fleet, eng = Fleet(["talker", "quiet"]), engine(settings)
    fleet.run(eng, T0, 10)  # arrival = event time here
    fleet.run(eng, T0 + 10, 200, only=["talker"])
    assert eng.tick(T0 + 9 + 119) == []
    raised = eng.tick(T0 + 9 + 121)
    assert [(a.sensor_id, a.kind, a.state) for a in raised] == [("quiet", "sensor_silent", "raised")]
    assert raised[0].evidence["silent_for_s"] == pytest.approx(121.0)
    assert eng.tick(T0 + 300) == [], "an open silence is not raised again"
    back = fleet.run(eng, T0 + 210, 1)
    assert [(a.sensor_id, a.kind, a.state, a.alert_id) for a in back] == [
        ("quiet", "sensor_silent", "cleared", raised[0].alert_id)]
    assert eng.idle_sensors(T0 + 210 + 30, idle_s=30.0) == ["talker", "quiet"]
    assert eng.idle_sensors(T0 + 210 + 30, idle_s=31.0) == []


def test_stuck_sensor_raises_once_and_clears_when_the_value_moves():
    settings = DetectionSettings(stuck=StuckSettings(window_readings=30))
    fleet, eng = Fleet(["ok", "frozen"], seed=7), engine(settings)
    alerts, frozen_h2 = [], None
    for k in range(80):
        t = T0 + k
        values = fleet.values(t, None)
        if k < 60:  # raw H2 of "frozen" repeats its first value for 60 readings
            frozen_h2 = values[1, 4] if frozen_h2 is None else frozen_h2
            values[1, 4] = frozen_h2
        stamps = np.full(2, t)
        alerts += eng.process(fleet.sensors, stamps, values, stamps)[1]
    assert [(a.sensor_id, a.kind, a.state) for a in alerts] == [
        ("frozen", "sensor_stuck", "raised"), ("frozen", "sensor_stuck", "cleared")]
    assert alerts[0].event_time == T0 + 29 and alerts[1].event_time == T0 + 60
    assert alerts[0].evidence["signals"]["raw_h2_ticks"]["identical_readings"] == 30


def test_real_registry_model_is_used_and_hot_switched(tmp_path):
    from train.registry import ModelRegistry

    rng = np.random.default_rng(8)
    quiet = np.tile(BASE, (200, 1)) * rng.lognormal(0, 0.05, (200, 12))
    fire = (np.tile(BASE, (200, 1)) + FIRE * rng.uniform(0.3, 1, (200, 1))) * rng.lognormal(0, 0.05, (200, 12))
    x = compute_features(FeatureState(), [f"q{i}" for i in range(400)], np.zeros(400), np.vstack([quiet, fire]))
    model = LogisticRegression(max_iter=2000).fit(np.nan_to_num(x[:, :len(POINT_FEATURES)]), [0] * 200 + [1] * 200)
    registry = ModelRegistry(tmp_path, "smoke-detector")
    registry.promote(registry.register(model, {"feature_names": list(POINT_FEATURES), "threshold": 0.5,
                                               "metrics": {"pr_auc": 0.9}, "test_fingerprint": "t"}))
    loaded = registry.load()
    # All four channels required: a fire can only raise when the model agrees.
    settings = DetectionSettings(fusion=FusionSettings(min_channels=4))
    fleet, eng = Fleet(["s0", "s1"], seed=9), engine(settings, model=loaded)
    assert fleet.run(eng, T0, 100) == []
    alerts = fleet.run(eng, T0 + 100, 40, fire_on("s0", T0 + 100))
    assert [(a.sensor_id, a.state, a.model_version) for a in alerts] == [("s0", "raised", loaded.version)]
    assert "model" in alerts[0].evidence["channels"]
    assert alerts[0].evidence["detectors"]["model"]["fire_probability"]["threshold"] == 0.5
    eng.set_model(None)  # hot switch: without the model the same fire on s1 cannot reach four channels
    later = fleet.run(eng, T0 + 140, 300, fire_on("s1", T0 + 140))
    assert [(a.sensor_id, a.state, a.model_version) for a in later] == [("s0", "cleared", None)]


def test_bad_input_is_an_error_not_a_guess():
    eng, n = engine(), 2
    good = (["a", "b"], np.array([T0, T0]), np.tile(BASE, (n, 1)), np.array([T0, T0]))
    with pytest.raises(ValueError, match="values has shape"):
        eng.process(good[0], good[1], good[2][:, :11], good[3])
    with pytest.raises(ValueError, match="arrival_times has shape"):
        eng.process(good[0], good[1], good[2], good[3][:1])
    nan = good[2].copy()
    nan[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"row 1 .*'b'.* not finite"):
        eng.process(good[0], good[1], nan, good[3])
    features, alerts = eng.process([], np.empty(0), np.empty((0, 12)), np.empty(0))
    assert alerts == [] and features.shape == (0, len(FEATURE_NAMES))


def test_alert_message_is_json_with_rfc3339_and_epoch_times():
    fleet, eng = Fleet(["s0"]), engine()
    fleet.run(eng, T0, 100)
    alert = fleet.run(eng, T0 + 100, 30, fire_on("s0", T0 + 100))[0]
    doc = orjson.loads(alert.to_message())
    assert set(doc) >= {"alert_id", "sensor_id", "kind", "severity", "state", "event_time", "detected_at", "score",
                        "model_version", "evidence", "event_time_epoch", "detected_at_epoch"}
    assert doc["event_time"].endswith("Z") and doc["event_time_epoch"] == alert.event_time
    assert doc["detected_at_epoch"] == 1.0
    nan_alert = AlertEvent("x", "s", "fire", "warning", "raised", T0, T0, float("nan"), None, {"v": float("nan")})
    assert orjson.loads(nan_alert.to_message())["evidence"] == {"v": None}


def test_state_bytes_per_sensor_at_10000_sensors_match_what_is_allocated():
    from bench.detection_quality import state_bytes_per_sensor

    measured = state_bytes_per_sensor(DetectionSettings(), 10_000)
    print(f"detection state at 10,000 sensors: {measured['estimated_bytes']:.0f} B/sensor estimated, "
          f"{measured['allocated_bytes']:.0f} B/sensor allocated")
    assert 0.7 * measured["allocated_bytes"] <= measured["estimated_bytes"] <= 1.3 * measured["allocated_bytes"]
    assert measured["estimated_bytes"] < 2_000


def test_snapshot_is_columnar_and_a_per_sensor_snapshot_still_restores():
    fleet, a = Fleet(["s0", "s1", "s2"], seed=7), engine()
    fleet.run(a, T0, 120, fire_on("s1", T0 + 100))
    snapshot = a.snapshot()
    assert snapshot["sensors"] == ["s0", "s1", "s2"]
    assert len(snapshot["detectors"]["zscore"]["count"]) == 3
    # Checkpoints written before the columnar format held one export per sensor.
    per_sensor = {"format": 1, "sensors": {s: a.export_sensor(s) for s in sorted(a.slots)}}
    old = DetectionEngine.restore(DetectionSettings(), per_sensor, clock=lambda: 1.0)
    assert json.dumps(old.snapshot()) == json.dumps(snapshot)
    fewer = DetectionSettings(stuck=StuckSettings(signals=["temperature_c"]))
    with pytest.raises(SnapshotError, match="settings"):
        DetectionEngine.restore(fewer, snapshot)
