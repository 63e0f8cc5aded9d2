"""The sensors file: the shipped sample covers the simulator's fleet; bad files name the entry."""

import pytest

from alerting.sensors import SensorsFileError, load_sensors
from ingest.settings import REPO_ROOT, SimulatorSettings, load_settings
from ingest.simulator import FleetSimulator


def test_the_shipped_sensors_file_places_every_simulated_sensor():
    settings = load_settings(environ={})
    sensors = {s.sensor_id: s for s in load_sensors(REPO_ROOT / settings.alerting.sensors_file)}
    fleet = FleetSimulator(SimulatorSettings(sensors=settings.simulator.sensors)).sensor_ids
    assert set(fleet) <= set(sensors)
    assert all(sensors[s].site and sensors[s].building and sensors[s].zone for s in fleet)
    assert len({(s.building, s.floor) for s in sensors.values()}) > 2
    assert sensors["sim-00000"].location.label().startswith("HQ, Building A, floor 0, lobby")


@pytest.mark.parametrize(("text", "message"), [
    ("sensors: [a, b]", "must map sensor ids"),
    ("sensors:\n  s1: {room: x}", "sensors.s1: unknown field 'room'"),
    ("sensors:\n  s1: kitchen", "sensors.s1: must be a mapping"),
    ("sensors:\n  s1: {zone: [a]}", "sensors.s1.zone: must be text"),
    ("other: {}", "one key, 'sensors'"),
    ("sensors: {", "not valid YAML"),
])
def test_a_bad_sensors_file_names_the_entry(tmp_path, text, message):
    path = tmp_path / "sensors.yaml"
    path.write_text(text)
    with pytest.raises(SensorsFileError, match=message):
        load_sensors(path)


def test_a_missing_sensors_file_is_an_error(tmp_path):
    with pytest.raises(SensorsFileError, match="no such sensors file"):
        load_sensors(tmp_path / "nope.yaml")
