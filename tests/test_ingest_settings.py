"""Settings: errors name the key, environment overrides apply, the shipped file validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.settings import DEFAULT_CONFIG, SettingsError, load_settings


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def test_the_shipped_configuration_validates():
    settings = load_settings(DEFAULT_CONFIG, environ={})
    assert settings.simulator.sensors >= 1 and settings.kafka.partitions >= 1


@pytest.mark.parametrize(("yaml_text", "key"), [
    ("simulator:\n  rate: -5\n", "simulator.rate"),
    ("simulator:\n  sensors: many\n", "simulator.sensors"),
    ("simulator:\n  dropout_probability: 2\n", "simulator.dropout_probability"),
    ("simulator:\n  sensor_prefix: 'has space'\n", "simulator.sensor_prefix"),
    ("kafka:\n  partitions: 0\n", "kafka.partitions"),
    ("simulator:\n  sensorz: 10\n", "simulator.sensorz"),
    ("stream:\n  checkpoint_interval_s: 0\n", "stream.checkpoint_interval_s"),
])
def test_a_bad_value_or_unknown_key_is_an_error_naming_the_key(tmp_path, yaml_text, key):
    with pytest.raises(SettingsError) as err:
        load_settings(_write(tmp_path, yaml_text), environ={})
    assert str(err.value).startswith(f"{key}:")


def test_invalid_yaml_and_a_non_mapping_are_clear_errors(tmp_path):
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(_write(tmp_path, "simulator: [unclosed\n"), environ={})
    with pytest.raises(SettingsError, match="mapping of sections"):
        load_settings(_write(tmp_path, "- a\n- b\n"), environ={})


def test_environment_overrides_win_over_the_file(tmp_path):
    path = _write(tmp_path, "simulator:\n  sensors: 10\n  rate: 20\n")
    settings = load_settings(path, environ={
        "SMOKE_SIMULATOR__SENSORS": "10000", "SMOKE_SIMULATOR__TIME_SCALE": "",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092,kafka-2:9092"})
    assert settings.simulator.sensors == 10_000
    assert settings.simulator.rate == 20
    assert settings.simulator.time_scale is None  # empty: as fast as possible
    assert settings.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_a_bad_environment_override_names_the_key():
    with pytest.raises(SettingsError, match=r"^simulator.linger_ms:"):
        load_settings(environ={"SMOKE_SIMULATOR__LINGER_MS": "soon"})


def test_settings_are_frozen():
    settings = load_settings(environ={})
    with pytest.raises(ValueError, match="frozen"):
        settings.simulator.sensors = 5


def test_the_shipped_settings_file_states_choices_not_defaults():
    """configs/pipeline.yaml changes defaults or says nothing: a restated default would drift from its home."""
    import yaml

    from ingest.settings import Settings

    def restated(data: dict, loaded: object, default: object, where: str) -> list[str]:
        found = []
        for key, value in data.items():
            mine, theirs = getattr(loaded, key), getattr(default, key)
            if isinstance(value, dict) and hasattr(theirs, "model_fields"):
                found += restated(value, mine, theirs, f"{where}{key}.")
            elif mine == theirs:
                found.append(f"{where}{key}")
        return found

    data = yaml.safe_load(DEFAULT_CONFIG.read_text()) or {}
    assert restated(data, load_settings(DEFAULT_CONFIG, environ={}), Settings(), "") == []


def test_environment_overrides_are_read_as_the_type_of_their_setting():
    s = load_settings(environ={
        "SMOKE_SERVE__API_KEYS": "0123",          # YAML 1.1 read this as the number 83
        "SMOKE_KAFKA__TOPIC": "no",               # ... and this as False
        "SMOKE_KAFKA__GROUP_ID": "1e3",
        "SMOKE_STREAM__WORKERS": "3",
        "SMOKE_DETECTION__FUSION__STEAM_VETO": "false",
        "SMOKE_RAY__NUM_CPUS": "",               # empty: not set
        "SMOKE_SERVE__CORS_ORIGINS": '["https://a.example", "https://b.example"]',
        "SMOKE_DETECTION__THRESHOLDS__LEVELS": "{temperature_c: {warning: 40, critical: 60}}",
    })
    assert s.serve.api_keys == ["0123"] and s.kafka.topic == "no" and s.kafka.group_id == "1e3"
    assert s.stream.workers == 3 and s.detection.fusion.steam_veto is False and s.ray.num_cpus is None
    assert s.serve.cors_origins == ["https://a.example", "https://b.example"]
    assert s.detection.thresholds.levels["temperature_c"].critical == 60.0


def test_an_override_naming_no_setting_is_an_error_naming_it():
    with pytest.raises(SettingsError, match="SMOKE_STREAM__WORKER: stream has no setting 'worker'"):
        load_settings(environ={"SMOKE_STREAM__WORKER": "3"})
    with pytest.raises(SettingsError, match="SMOKE_NOPE__X: no settings section 'nope'"):
        load_settings(environ={"SMOKE_NOPE__X": "1"})
    with pytest.raises(SettingsError, match=r"stream\.workers: Input should be a valid integer"):
        load_settings(environ={"SMOKE_STREAM__WORKERS": "many"})


def test_a_missing_config_file_is_an_error_not_the_defaults(tmp_path):
    import subprocess
    import sys

    with pytest.raises(SettingsError, match="no such settings file"):
        load_settings(tmp_path / "nope.yaml", environ={})
    run = subprocess.run([sys.executable, "-m", "cluster.cli", "--config", str(tmp_path / "nope.yaml"), "status"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "nope.yaml: no such settings file" in run.stderr
