"""The fleet simulator and CSV replay, without Kafka (fast unit tests of pure generation)."""

from __future__ import annotations

import io

import numpy as np
import orjson
import pandas as pd
import pytest

from ingest.incidents import IncidentKind
from ingest.kaggle import read_kaggle_csv
from ingest.kaggle_generator import write_kaggle_csv
from ingest.schema import MEASUREMENTS
from ingest.settings import SimulatorSettings
from ingest.simulator import (
    STUCK,
    FleetSimulator,
    Incident,
    fire_labels,
    paced,
    read_incident_log,
    replay_batches,
    replay_schedule,
)
from ingest.validation import validate_messages

START = 1_700_000_000.0


def _run(config: SimulatorSettings, duration_s: float):
    sim = FleetSimulator(config, start_time=START)
    batches = list(sim.batches(batch_size=500, duration_s=duration_s))
    frame = pd.DataFrame(np.vstack([b.values for b in batches]), columns=list(MEASUREMENTS))
    frame.insert(0, "timestamp", np.concatenate([b.timestamps for b in batches]))
    frame.insert(0, "sensor_id", [s for b in batches for s in b.sensor_ids])
    return sim, batches, frame


def test_same_seed_same_readings_and_incidents_other_seed_different():
    config = SimulatorSettings(sensors=30, rate=30, seed=5, incidents_per_sensor_hour=10)
    a, batches_a, _ = _run(config, 600)
    b, batches_b, _ = _run(config, 600)
    c, batches_c, _ = _run(config.model_copy(update={"seed": 6}), 600)
    messages = [m for batch in batches_a for m in batch.messages()]
    assert messages == [m for batch in batches_b for m in batch.messages()]
    assert messages == [bytes(m) for batch in batches_a for m in batch.wire_messages()]
    assert a.incidents == b.incidents and a.incidents != c.incidents
    assert messages != [m for batch in batches_c for m in batch.messages()]


def test_readings_are_valid_in_event_time_order_at_the_configured_rate():
    config = SimulatorSettings(sensors=40, rate=80, seed=1, dropout_probability=0.0, stuck_sensor_share=0.0,
                               incidents_per_sensor_hour=20)
    sim, batches, frame = _run(config, 300)
    assert len(frame) == 300 * 80
    assert not validate_messages([m for b in batches for m in b.messages()]).rejected
    assert frame["timestamp"].is_monotonic_increasing
    per_sensor = frame.groupby("sensor_id")["timestamp"].diff().dropna()
    assert per_sensor.round(3).unique().tolist() == [0.5]  # 40 sensors at 80/s: each every 0.5 s
    assert sim.now == pytest.approx(START + 300)


def test_ten_thousand_sensors_in_one_batch():
    sim = FleetSimulator(SimulatorSettings(sensors=10_000, rate=5_000, seed=2), start_time=START)
    batch = next(sim.batches(batch_size=20_000))
    assert len(set(batch.sensor_ids)) == len(batch) > 9_900  # a few dropouts, no sensor twice
    assert not validate_messages(batch.messages()).rejected


def test_the_readings_of_a_seed_do_not_depend_on_the_batch_size():
    config = SimulatorSettings(sensors=1_200, rate=600, seed=3, dropout_probability=0.05,
                               incidents_per_sensor_hour=30)
    runs = []
    for batch_size in (7, 500, 1_100, 5_000):
        sim = FleetSimulator(config, start_time=START)
        batches = list(sim.batches(batch_size=batch_size, duration_s=9))
        assert max(len(b) for b in batches) <= min(batch_size, 1_200)
        assert all(len(set(b.sensor_ids)) == len(b) for b in batches)
        runs.append(([m for b in batches for m in b.messages()], sim.incidents))
    assert all(run == runs[0] for run in runs[1:])


def test_dropouts_leave_gaps_and_are_counted():
    config = SimulatorSettings(sensors=50, rate=50, seed=3, dropout_probability=0.2)
    sim, _, frame = _run(config, 200)
    assert sim.dropped + len(frame) == 50 * 200
    assert 0.15 < sim.dropped / (50 * 200) < 0.25


def test_stuck_sensors_freeze_one_measurement_and_are_logged():
    config = SimulatorSettings(sensors=20, rate=20, seed=4, stuck_sensor_share=0.3, incidents_per_sensor_hour=0)
    sim, _, frame = _run(config, 120)
    stuck = [i for i in sim.incidents if i.kind == STUCK]
    assert stuck
    for incident in stuck:
        rows = frame[frame["sensor_id"] == incident.sensor_id]
        assert rows[incident.detail].nunique() == 1
        others = [m for m in ("humidity_pct", "raw_h2_ticks") if m != incident.detail]
        assert rows[others[0]].nunique() > 1
    healthy = frame[~frame["sensor_id"].isin({i.sensor_id for i in stuck})]
    assert healthy.groupby("sensor_id")["humidity_pct"].nunique().min() > 1


def _window(frame, incident: Incident, start: float, end: float):
    rows = frame[(frame["sensor_id"] == incident.sensor_id)]
    return rows[(rows["timestamp"] >= start) & (rows["timestamp"] < end)]


def test_incidents_raise_their_signals_together_and_are_logged_as_they_start():
    log = io.BytesIO()
    config = SimulatorSettings(sensors=40, rate=40, seed=7, incidents_per_sensor_hour=4, nuisance_share=0.3,
                               stuck_sensor_share=0.0, dropout_probability=0.0)
    sim = FleetSimulator(config, start_time=START, incident_log=log)
    batches = list(sim.batches(duration_s=3_600))
    frame = pd.DataFrame(np.vstack([b.values for b in batches]), columns=list(MEASUREMENTS))
    frame.insert(0, "timestamp", np.concatenate([b.timestamps for b in batches]))
    frame.insert(0, "sensor_id", [s for b in batches for s in b.sensor_ids])
    logged = [Incident(**orjson.loads(line)) for line in log.getvalue().splitlines()]
    assert logged == sim.incidents
    kinds = {i.kind for i in logged}
    assert {IncidentKind.SMOULDERING, IncidentKind.FLAMING, IncidentKind.NUISANCE} <= kinds
    checked = 0
    for incident in logged:
        earlier_end = max((i.end for i in logged if i.sensor_id == incident.sensor_id and i.start < incident.start),
                          default=START)
        if incident.end > START + 3_600 or incident.start - 120 < earlier_end:
            continue  # no clean baseline before it
        before = _window(frame, incident, incident.start - 120, incident.start)
        peak = _window(frame, incident, incident.start + 0.4 * (incident.end - incident.start),
                       incident.start + 0.8 * (incident.end - incident.start))
        if incident.is_fire:
            for name in ("pm2_5_ugm3", "nc0_5_per_cm3"):
                assert peak[name].median() > 2 * before[name].median(), (incident, name)
            assert peak["tvoc_ppb"].median() > before["tvoc_ppb"].median() + 100, incident
            assert peak["eco2_ppm"].median() > before["eco2_ppm"].median(), incident
            assert peak["raw_ethanol_ticks"].median() < before["raw_ethanol_ticks"].median(), incident
        else:
            assert peak["humidity_pct"].median() > before["humidity_pct"].median() + 3
        checked += 1
    assert checked >= 10
    labels = fire_labels(frame["sensor_id"].tolist(), frame["timestamp"].to_numpy(), logged)
    assert 0 < labels.mean() < 0.5


def test_flaming_fires_rise_faster_than_smouldering_ones():
    config = SimulatorSettings(sensors=50, rate=50, seed=9, incidents_per_sensor_hour=3, nuisance_share=0.0,
                               stuck_sensor_share=0.0, dropout_probability=0.0)
    sim, _, frame = _run(config, 3_600)
    rise: dict[str, list[float]] = {IncidentKind.FLAMING: [], IncidentKind.SMOULDERING: []}
    for incident in sim.incidents:
        if incident.end > START + 3_600:
            continue
        rows = _window(frame, incident, incident.start, incident.end)
        pm = rows["pm2_5_ugm3"].rolling(5, min_periods=1).median().to_numpy()
        half = np.flatnonzero(pm >= pm.min() + 0.5 * (pm.max() - pm.min()))[0]
        rise[incident.kind].append(rows["timestamp"].iloc[half] - incident.start)
    assert rise[IncidentKind.FLAMING] and rise[IncidentKind.SMOULDERING]
    assert np.median(rise[IncidentKind.FLAMING]) < 0.5 * np.median(rise[IncidentKind.SMOULDERING])


def test_paced_holds_batches_to_the_time_scale():
    config = SimulatorSettings(sensors=10, rate=10, seed=1, dropout_probability=0.0)
    sim = FleetSimulator(config, start_time=START)
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    out = list(paced(sim.batches(batch_size=5, duration_s=10), 2.0, clock=lambda: now[0], sleep=sleep))
    assert len(out) == 20
    assert now[0] == pytest.approx((10 - 0.5) / 2.0)  # the last batch starts 9.5 simulated s in, at 2x
    assert list(paced(iter(out), None)) == out


def test_incident_log_file_round_trips(tmp_path):
    path = tmp_path / "incidents.jsonl"
    with open(path, "wb") as log:
        sim = FleetSimulator(SimulatorSettings(sensors=20, rate=20, seed=3, incidents_per_sensor_hour=20,
                                               stuck_sensor_share=0.1), start_time=START, incident_log=log)
        for _ in sim.batches(duration_s=600):
            pass
    assert read_incident_log(path) == sim.incidents and sim.incidents


def test_replay_deals_sessions_to_sensors_and_shortens_gaps(tmp_path):
    made = write_kaggle_csv(tmp_path / "s.csv", rows=2_000, seed=3, bad_rows=5)
    plan = replay_schedule(read_kaggle_csv(tmp_path / "s.csv"), sensors=3, start_time=START, max_gap_s=2.0)
    assert plan["event_time"].iloc[0] == START
    assert plan["event_time"].diff().dropna().between(0, 2.0).all()
    firsts = [s.first_row for s in made.sessions]
    assert plan["sensor_id"].iloc[firsts].tolist() == [f"kaggle-{k % 3:05d}" for k in range(len(firsts))]
    messages = [m for b in replay_batches(plan, batch_size=300) for m in b.messages]
    batch = validate_messages(messages)
    assert len(messages) == 2_000
    assert {k: {p.reason for p in v} for k, v in batch.rejected.items()} == \
        {k: {r} for k, r in made.bad_rows.items()}
