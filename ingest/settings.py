"""Typed settings: ``configs/pipeline.yaml`` plus environment overrides, validated once.

Every command calls :func:`load_settings` at start-up and passes the result (or
the section it needs) down; nothing reads the YAML or the environment later.

Environment overrides use ``SMOKE_<SECTION>__<KEY>`` (nested keys joined by
``__``), for example ``SMOKE_STREAM__WORKERS=4``. The text is read as the type of
the setting it overrides: a string stays a string (``SMOKE_SERVE__API_KEYS=0123``
is the key ``0123``, ``SMOKE_KAFKA__TOPIC=no`` the topic ``no``), a number or a
boolean is converted by the setting's own validation, a list of strings may be
comma-separated, and only structured settings (mappings, lists of sections) are
parsed as YAML/JSON; an empty value means "not set" (None). An override naming
no setting is an error. ``KAFKA_BOOTSTRAP_SERVERS`` is also honoured: when set,
the embedded broker is not started. ``--config`` naming a file that does not
exist is an error; without it, a missing ``configs/pipeline.yaml`` means defaults.

>>> s = load_settings(environ={"SMOKE_KAFKA__PARTITIONS": "4", "SMOKE_SERVE__API_KEYS": "0123,k2"})
>>> s.kafka.partitions, s.serve.api_keys
(4, ['0123', 'k2'])
>>> load_settings(environ={"SMOKE_KAFKA__TOPIC": "no"}).kafka.topic
'no'
>>> load_settings(environ={"SMOKE_KAFKA__TOPICS": "x"})
Traceback (most recent call last):
...
ingest.settings.SettingsError: SMOKE_KAFKA__TOPICS: kafka has no setting 'topics'
>>> load_settings(environ={"SMOKE_KAFKA__PARTITIONS": "-1"})
Traceback (most recent call last):
...
ingest.settings.SettingsError: kafka.partitions: Input should be greater than or equal to 1 (got '-1')
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from ingest.schema import MEASUREMENTS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "pipeline.yaml"
ENV_PREFIX = "SMOKE_"


class Section(BaseModel):
    # Unknown keys are errors: a typo in the YAML must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSecuritySettings(Section):
    """How every Kafka client authenticates and encrypts (docs/operations.md, "Connecting to a managed Kafka")."""

    protocol: typing.Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security.protocol: SSL and SASL_SSL encrypt with TLS, SASL_* authenticate "
                                 "with sasl_mechanism")
    ssl_cafile: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates; empty: the system's CAs")
    ssl_certfile: Path | None = Field(None, description="PEM client certificate (mutual TLS); needs ssl_keyfile")
    ssl_keyfile: Path | None = Field(None, description="PEM private key of ssl_certfile")
    ssl_key_password: SecretStr | None = Field(None, description="password of an encrypted ssl_keyfile")
    ssl_check_hostname: bool = Field(
        True, description="check that the broker's certificate names the host connected to; turn off only for "
                          "a broker reached by an address its certificate does not carry")
    sasl_mechanism: typing.Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism of SASL_PLAINTEXT / SASL_SSL (Confluent Cloud: PLAIN with an API "
                             "key; MSK and Aiven: SCRAM-SHA-512 / SCRAM-SHA-256)")
    sasl_username: str | None = Field(None, description="SASL user (Confluent Cloud: the API key)")
    sasl_password: SecretStr | None = Field(None, description="SASL password (Confluent Cloud: the API secret); "
                                                              "never printed")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile", mode="after")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # Stream workers run in Ray's own working directory: a relative path would point elsewhere there.
        return None if path is None else path.expanduser().absolute()

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecuritySettings:
        if self.uses_sasl:
            for name in ("sasl_username", "sasl_password"):
                value = getattr(self, name)
                text = value.get_secret_value() if isinstance(value, SecretStr) else value
                if not text:
                    raise ValueError(f"{name} is required with protocol {self.protocol}")
        tls_files = {"ssl_cafile": self.ssl_cafile, "ssl_certfile": self.ssl_certfile,
                     "ssl_keyfile": self.ssl_keyfile}
        if not self.uses_tls:
            given = [name for name, path in tls_files.items() if path is not None]
            if given:
                raise ValueError(f"{', '.join(given)} set but protocol {self.protocol} does not use TLS "
                                 "(SSL or SASL_SSL)")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (mutual TLS needs both)")
        for name, path in tls_files.items():
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {str(path)!r}: no such file")
        return self


class KafkaSettings(Section):
    bootstrap_servers: str | None = Field(
        None, description="host:port list of an existing Kafka; empty starts the embedded broker")
    embedded_port: int = Field(0, ge=0, le=65535, description="port of the embedded broker; 0 picks a free one")
    topic: str = "smoke_sensor_data"
    alerts_topic: str = "smoke_alerts"
    dlq_topic: str = "smoke_sensor_data.dlq"
    partitions: int = Field(8, ge=1, le=1024, description="partitions of the readings topic")
    replication_factor: int = Field(1, ge=1)
    group_id: str = Field("smoke-detect", description="group under which offsets are committed (for lag tools)")
    startup_timeout_s: float = Field(30.0, gt=0)
    security: KafkaSecuritySettings = KafkaSecuritySettings()


class SimulatorSettings(Section):
    sensors: int = Field(100, ge=1, le=1_000_000)
    rate: float = Field(100.0, gt=0, description="readings per second across all sensors")
    duration_s: float | None = Field(None, gt=0, description="stop after this long; empty runs until stopped")
    seed: int = 42
    incidents_per_sensor_hour: float = Field(0.5, ge=0)
    nuisance_share: float = Field(0.3, ge=0, le=1, description="share of incidents that are cooking/steam")
    dropout_probability: float = Field(0.001, ge=0, le=1)
    stuck_sensor_share: float = Field(0.01, ge=0, le=1)
    out_dir: Path = Path("data/simulator")
    outdoor_share: float = Field(0.2, ge=0, le=1, description="share of sensors placed outdoors")
    time_scale: float | None = Field(
        1.0, gt=0, description="simulated seconds per wall second; empty runs as fast as possible")
    sensor_prefix: str = Field("sim", pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
    replay_speed: float | None = Field(
        1.0, gt=0, description="CSV replay speed-up over the recorded pace; empty sends as fast as possible")
    replay_max_gap_s: float = Field(5.0, gt=0, description="CSV replay shortens gaps between sessions to this")
    linger_ms: int = Field(20, ge=0, le=10_000, description="producer: wait this long to fill a batch")
    batch_bytes: int = Field(256 * 1024, ge=1024, description="producer: bytes per partition batch")
    delivery_attempts: int = Field(5, ge=1, le=100, description="producer: sends of one reading before giving up")
    retry_backoff_ms: int = Field(200, ge=1, description="producer: first delay before a resend; doubles each time")
    delivery_timeout_s: float = Field(
        30.0, gt=0, le=600, description="producer: how long kafka-python itself retries one send (and waits "
                                        "for a full buffer or missing metadata) before we resend it")


class StreamSettings(Section):
    workers: int = Field(2, ge=1, le=256, description="PartitionWorker actors")
    poll_max_records: int = Field(5000, ge=1, description="records per poll at most: larger polls spread each "
                                  "batch's fixed cost over more readings (5,000: about 5% more throughput than 2,000)")
    poll_timeout_ms: int = Field(100, ge=1)
    checkpoint_interval_s: float = Field(5.0, gt=0)
    checkpoint_every_messages: int = Field(20_000, ge=1)
    checkpoint_dir: str = Field("data/checkpoints", description="local path or pyarrow filesystem URI")
    lake_dir: str = Field("data/lake", description="Parquet lake of accepted readings and features")
    idle_eviction_s: float = Field(600.0, gt=0, description="evict a sensor's state after this long unseen")
    evictions_per_sweep: int = Field(500, ge=1, description="idle sensors evicted per sweep at most, longest idle "
                                     "first: each is a file write on the loop thread (about 0.14 ms), so a mass "
                                     "eviction is spread over sweeps a second apart instead of stalling the partition")
    supervisor_name: str = Field("stream-supervisor", min_length=1,
                                 description="name of the detached supervisor actor in ray.namespace")
    worker_num_cpus: float = Field(0.5, ge=0, description="logical CPUs reserved per PartitionWorker")
    model_poll_s: float = Field(3.0, gt=0, description="how often workers read the registry's production alias")
    health_check_s: float = Field(1.0, gt=0, description="how often the supervisor checks its workers")
    reset_grace_s: float = Field(3.0, gt=0,
                                 description="a checkpointed offset beyond the partition end for this long "
                                             "means the broker lost its log (memory-only broker restarted)")


class TrainSettings(Section):
    registry_dir: str = "data/registry"
    model_name: str = "smoke-detector"
    test_fraction: float = Field(0.2, gt=0, lt=1, description="latest share of the timeline held out for test")
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    target_recall: float = Field(0.99, gt=0, le=1)
    num_workers: int = Field(2, ge=1, description="Ray Train workers per LightGBM trial")
    max_concurrent_trials: int = Field(1, ge=1)


class RetrainSettings(Section):
    """How a retrained candidate is judged against production on a later window (cluster/guarded_retrain.py)."""

    pr_auc_tolerance: float = Field(0.002, ge=0, description="candidate PR-AUC on the guard window may be this "
                                                              "much below production's and still count as no worse")
    delay_tolerance_s: float = Field(10.0, ge=0, description="median time to detect may be this much longer "
                                                             "(replay of the guard window through the engine)")
    false_alerts_tolerance_per_100h: float = Field(0.0, ge=0, description="fire alerts on label-0 readings per "
                                                                          "100 sensor-hours: this many more allowed")


class ServeVariant(Section):
    """One arm of the A/B split: a registry reference and its share of the sensors."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    ref: str = Field("production", description="'production' (follows the alias) or a pinned version like v0002")
    weight: float = Field(1.0, gt=0)


class ServeSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    app_name: str = Field("smoke", description="Serve application name")
    max_batch_rows: int = Field(10_000, ge=1, description="rows per /predict/batch request; more is 413")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="request body limit; more is 413")
    cors_origins: list[str] = []
    api_keys: list[str] = Field([], description="accepted API keys; empty disables auth")
    rate_limit_per_minute: int = Field(0, ge=0, description="per API key (per client address when auth is "
                                                            "off); 0 disables")
    rate_limit_burst: int = Field(0, ge=0, description="bucket size; 0 means rate_limit_per_minute")
    rate_limit_max_keys: int = Field(100_000, ge=1, description="rate-limit buckets a replica keeps at most "
                                                                "(least recently used forgotten first)")
    trusted_proxies: list[str] = Field(
        [], description="addresses of proxies in front of Serve that set X-Forwarded-For themselves: with auth "
                        "off, the rate limit's client address is then read from that header; without them, "
                        "requests carrying the header share one bucket (a client could write it itself)")
    batch_max_size: int = Field(64, ge=1, description="@serve.batch size behind /predict")
    batch_wait_timeout_s: float = Field(0.0, ge=0, description="wait for a fuller batch; 0 takes what is queued")
    reload_poll_s: float = Field(2.0, gt=0, description="how often replicas read the production alias")
    variants: list[ServeVariant] = Field(
        [], description="A/B split by sensor_id hash; empty serves the production alias alone")
    shadow: str | None = Field(None, description="registry reference scored and counted but never returned")

    @field_validator("api_keys", "cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        # SMOKE_SERVE__API_KEYS=k1,k2 arrives as one YAML string; a list stays a list.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class RaySettings(Section):
    """The Ray cluster: an existing one (``address``) or the head ``smoke up`` starts on this machine."""

    address: str | None = Field(
        None, description="GCS address (host:port) of an existing Ray cluster; empty: `smoke up` starts a head")
    namespace: str = Field("smoke", min_length=1, description="Ray namespace of the detached actors and Serve")
    port: int = Field(6379, ge=1, le=65535, description="GCS port of the head `smoke up` starts")
    dashboard_host: str = Field(
        "127.0.0.1", description="interface of the dashboard and job API (the only Ray port Ray binds as told)")
    dashboard_port: int = Field(8265, ge=1, le=65535, description="dashboard and `ray job submit` API port")
    metrics_export_port: int = Field(8080, ge=1, le=65535,
                                     description="Prometheus endpoint of the head node (Ray and smoke_* metrics)")
    # Ray's defaults for the next four (10001, 52365, 9101, 8404) collide with any other Ray on the
    # host (a plain ray.init(), a test cluster): 0 lets `smoke up` pick free ones.
    client_server_port: int = Field(0, ge=0, le=65535, description="Ray Client port (ray://host:port); 0: a free one")
    dashboard_agent_port: int = Field(0, ge=0, le=65535,
                                      description="HTTP port of the head's dashboard agent; 0: a free one")
    haproxy_metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port of Serve's HAProxy "
                                                                     "ingress (all interfaces); 0: a free one")
    haproxy_stats_port: int = Field(0, ge=0, le=65535, description="stats page port of Serve's HAProxy ingress "
                                                                   "(all interfaces); 0: a free one")
    num_cpus: int | None = Field(
        4, ge=1, description="logical CPUs the head offers; more than the cores is fine because the stream "
                             "workers and Serve replicas mostly wait on I/O; empty: the number of cores")
    run_dir: Path = Field(
        Path("var"), description="where `smoke up` keeps the Ray temp dir, logs and its state file; "
                                 "keep the absolute path short (Unix socket paths are limited to 107 bytes)")
    start_timeout_s: float = Field(90.0, gt=0, description="how long `smoke up` waits for the Ray head")


class ThresholdTier(Section):
    """Warning and critical levels of one measurement (a reading at or above the level fires)."""

    warning: float
    critical: float | None = Field(None, description="empty: this signal never pages on its own")
    source: str = Field("", description="where the levels come from (documentation only)")

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdTier:
        if self.critical is not None and self.critical <= self.warning:
            raise ValueError(f"critical ({self.critical}) must be above warning ({self.warning})")
        return self


def _default_tiers() -> dict[str, ThresholdTier]:
    return {
        "temperature_c": ThresholdTier(
            warning=50.0, critical=57.0,
            source="UL 521 / NFPA 72 ordinary-rated fixed-temperature heat detectors operate at 57 C "
                   "(135 F); EN 54-5 class A1 static response 54-65 C"),
        "pm2_5_ugm3": ThresholdTier(
            warning=150.5, critical=1000.0,
            source="US EPA AQI 'very unhealthy' 24-h PM2.5 breakpoint 150.5 ug/m3; Sensirion SPS30 "
                   "specified range ends at 1,000 ug/m3"),
        "nc0_5_per_cm3": ThresholdTier(
            warning=1000.0, critical=3000.0,
            source="Sensirion SPS30 specified number-concentration range ends at 3,000 #/cm3; warning at a "
                   "third of it (about 2x the Kaggle mean of 491)"),
        "tvoc_ppb": ThresholdTier(
            warning=2200.0, critical=None,
            source="German UBA TVOC level 5 (>10 mg/m3, unacceptable) at Sensirion's 4.5 ug/m3 per ppb "
                   "for the SGP30 TVOC mixture; solvents also reach it, so it never pages alone"),
        "eco2_ppm": ThresholdTier(
            warning=2000.0, critical=None,
            source="twice the 1,000 ppm ventilation guidance (ASHRAE 62.1 practice); the SGP30 derives "
                   "eCO2 from H2, so it is gas evidence, never a page alone"),
    }


class ZScoreSignal(Section):
    """One signal of the EWMA z-score detector."""

    direction: str = Field(pattern=r"^(up|down)$", description="the direction a fire moves it")
    log: bool = Field(False, description="score log1p(value): heavy-tailed signals (particles, TVOC)")
    std_floor: float = Field(gt=0, description="smallest std used: z_threshold x floor is the smallest "
                                               "excess that can fire, whatever the sensor's own noise")
    group: str = Field(pattern=r"^(particles|gas|heat|humidity)$",
                       description="evidence channel for fusion")
    tracks_clean_air: bool = Field(False, description="the baseline follows readings on the clean side fast "
                                                      "(pollutants: clean air is their floor; not temperature or "
                                                      "humidity, whose 'other side' is no cleaner)")


def _default_zscore_signals() -> dict[str, ZScoreSignal]:
    return {
        # Smoke particles: log scale, floor 0.2 -> 6 x 0.2 = 1.2 log units, about 3.3x the sensor's baseline
        # (twice the SPS30's ~10 % reading-to-reading spread in log units, many times over).
        "pm2_5_ugm3": ZScoreSignal(direction="up", log=True, std_floor=0.2, group="particles",
                                   tracks_clean_air=True),
        "nc0_5_per_cm3": ZScoreSignal(direction="up", log=True, std_floor=0.2, group="particles",
                                   tracks_clean_air=True),
        # TVOC: log scale, same floor: about 3.3x the sensor's own baseline.
        "tvoc_ppb": ZScoreSignal(direction="up", log=True, std_floor=0.2, group="gas", tracks_clean_air=True),
        # SGP30 raw H2 ticks fall as H2 rises (log-resistance); floor 6 ticks -> a 36-tick fall.
        "raw_h2_ticks": ZScoreSignal(direction="down", std_floor=6.0, group="gas", tracks_clean_air=True),
        # eCO2 is computed from H2 by the SGP30; floor 15 ppm -> +90 ppm.
        "eco2_ppm": ZScoreSignal(direction="up", std_floor=15.0, group="gas", tracks_clean_air=True),
        # Heat: floor 0.75 C -> 4.5 C above the sensor's own baseline.
        "temperature_c": ZScoreSignal(direction="up", std_floor=0.75, group="heat"),
        # Humidity rising is the steam/cooking veto (fires dry the air); floor 0.5 %RH -> +3 %RH, well above
        # the SHT3x/BME280 noise (0.1-0.25 %RH) and what a fire does (it lowers humidity).
        "humidity_pct": ZScoreSignal(direction="up", std_floor=0.5, group="humidity"),
    }


class ThresholdSettings(Section):
    levels: dict[str, ThresholdTier] = Field(default_factory=_default_tiers)

    @field_validator("levels")
    @classmethod
    def _known(cls, levels: dict[str, ThresholdTier]) -> dict[str, ThresholdTier]:
        return _known_measurements(levels)


class ZScoreSettings(Section):
    alpha: float = Field(0.002, gt=0, lt=1, description="EWMA weight of a normal reading (~500-reading memory: "
                                                     "slower than a smouldering fire's rise, faster than drift)")
    clean_alpha: float = Field(0.02, gt=0, lt=1, description="EWMA weight of a reading on the clean side of the "
                                                              "baseline (~50 readings): the baseline tracks clean "
                                                              "air, like the SGP30's baseline compensation")
    anomalous_alpha_share: float = Field(
        0.05, ge=0, le=1, description="anomalous readings are learnt at alpha x this, so an incident does "
                                      "not become the baseline but a lasting shift eventually does")
    warmup_readings: int = Field(60, ge=2, description="no z-score opinion before this many readings")
    threshold: float = Field(6.0, gt=0, description="z at which a signal fires")
    signals: dict[str, ZScoreSignal] = Field(default_factory=_default_zscore_signals)

    @field_validator("signals")
    @classmethod
    def _known(cls, signals: dict[str, ZScoreSignal]) -> dict[str, ZScoreSignal]:
        return _known_measurements(signals)


class RateOfRiseSettings(Section):
    temperature_c_per_min: float = Field(
        8.3, gt=0, description="UL 521 / NFPA 72 rate-of-rise heat detectors: 15 F (8.3 C) per minute")
    nc0_5_per_cm3_per_s: float = Field(
        10.0, gt=0, description="particle growth; quiet SPS30 noise is below 1 #/cm3/s, cooking below 2")
    smoothing_alpha: float = Field(0.1, gt=0, le=1, description="EWMA of the per-reading rates: about 10 "
                                                                 "readings, as a heat detector's thermal lag")


class StuckSettings(Section):
    window_readings: int = Field(300, ge=3, description="identical consecutive values that make a stuck signal")
    signals: list[str] = Field(
        ["temperature_c", "humidity_pct", "raw_h2_ticks", "raw_ethanol_ticks", "pressure_hpa", "pm1_0_ugm3",
         "pm2_5_ugm3", "nc0_5_per_cm3", "nc1_0_per_cm3", "nc2_5_per_cm3"],
        description="signals whose noise exceeds their resolution; SGP30 TVOC/eCO2 legitimately sit flat "
                    "at 0 ppb / 400 ppm in clean air and are left out")

    @field_validator("signals")
    @classmethod
    def _known(cls, signals: list[str]) -> list[str]:
        return list(_known_measurements(dict.fromkeys(signals)))


class ParticleSizeSettings(Section):
    coarse_pm2_5_pm1_0_ratio: float = Field(
        2.2, gt=1, description="PM2.5/PM1.0 at or above this is coarse (steam, cooking, dust), not smoke: "
                               "combustion aerosol is sub-micron (ratio near 1; 1.25 in the simulator's smoke), "
                               "water droplets are > 1 um (ratio near 3)")
    min_pm1_0_ugm3: float = Field(1.0, gt=0, description="below this PM1.0 the ratio is rounding noise (the "
                                                         "SPS30 reports 0.01 ug/m3 steps)")


class SilentSettings(Section):
    after_s: float = Field(120.0, gt=0, description="wall-clock silence that raises sensor_silent; within "
                                                    "NFPA 72's 200 s limit for reporting a lost wireless device")


class FusionSettings(Section):
    raise_k: int = Field(3, ge=1, description="raise after k anomalous readings ...")
    raise_n: int = Field(5, ge=1, le=32, description="... among the last n")
    clear_m: int = Field(30, ge=1, description="clear after m consecutive normal readings")
    hold_ratio: float = Field(0.5, gt=0, le=1, description="once raised, a reading stays anomalous down to "
                                                           "this share of each relative threshold (z, rate, "
                                                           "model probability): hysteresis")
    threshold_hold_ratio: float = Field(0.9, gt=0, le=1, description="the same for absolute levels (C, ug/m3): "
                                                                     "a narrow band, as a heat detector's reset")
    min_channels: int = Field(2, ge=1, le=4, description="independent evidence channels (particles, gas, "
                                                         "heat, model) that make a reading a fire")
    steam_veto: bool = Field(True, description="while humidity rises, particles do not count and one more "
                                               "channel is needed (cooking/steam, UL 217 8th ed. nuisance tests)")

    @model_validator(mode="after")
    def _k_of_n(self) -> FusionSettings:
        if self.raise_k > self.raise_n:
            raise ValueError(f"raise_k ({self.raise_k}) cannot exceed raise_n ({self.raise_n})")
        return self


class DetectionSettings(Section):
    """Detector thresholds and fusion; see docs/detection.md for the sources of the defaults."""

    thresholds: ThresholdSettings = ThresholdSettings()
    zscore: ZScoreSettings = ZScoreSettings()
    rate_of_rise: RateOfRiseSettings = RateOfRiseSettings()
    particle_size: ParticleSizeSettings = ParticleSizeSettings()
    stuck: StuckSettings = StuckSettings()
    silent: SilentSettings = SilentSettings()
    fusion: FusionSettings = FusionSettings()


def _known_measurements(mapping: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(mapping) - set(MEASUREMENTS))
    if unknown:
        raise ValueError(f"unknown measurements {unknown}; known: {list(MEASUREMENTS)}")
    return mapping


class MqttSettings(Section):
    """The MQTT -> Kafka bridge (``smoke bridge mqtt``, :mod:`ingest.mqtt_bridge`)."""

    enabled: bool = Field(False, description="`smoke up` starts the bridge (it needs an MQTT broker at host:port)")
    host: str = Field("127.0.0.1", description="MQTT broker host")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port (8883 is the usual TLS port)")
    topics: list[str] = Field(["sensors/+/reading"], min_length=1,
                              description="topic filters subscribed at QoS 1 (+ one level, # the rest)")
    sensor_id_level: int | None = Field(
        1, ge=0, description="0-based level of the MQTT topic that is the sensor id (1 in sensors/<id>/reading); "
                             "empty: the payload's sensor_id. A payload sensor_id that disagrees is rejected")
    client_id: str = Field("smoke-mqtt-bridge", min_length=1, max_length=23,
                           description="MQTT client id; the broker keeps this id's persistent session (queued "
                                       "and unacknowledged messages) while the bridge is down")
    username: str | None = Field(None, description="MQTT username; empty: no authentication")
    password: str | None = Field(None, description="MQTT password (with username)")
    tls: bool = Field(False, description="connect with TLS (the system's CAs unless tls_ca_file)")
    tls_ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate")
    tls_cert_file: Path | None = Field(None, description="client certificate, for brokers that require one")
    tls_key_file: Path | None = Field(None, description="key of tls_cert_file")
    keepalive_s: int = Field(30, ge=5, le=65535, description="MQTT keepalive: a dead connection is noticed "
                                                               "within 1.5x this")
    reconnect_max_delay_s: float = Field(30.0, gt=0, description="longest wait between reconnection attempts "
                                                                 "(they start at 1 s and double)")
    batch_max: int = Field(1000, ge=1, description="messages validated and sent to Kafka together at most")
    linger_ms: int = Field(5, ge=0, description="Kafka producer linger: batching against latency")
    stalled_after_s: float = Field(
        30.0, gt=0, description="a message waiting this long for Kafka makes the bridge report degraded")
    metrics_host: str = Field("127.0.0.1", description="interface of the bridge's /metrics and /health")
    metrics_port: int = Field(9108, ge=0, le=65535, description="port of /metrics and /health; 0: a free one")

    @field_validator("topics", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MqttSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("mqtt.username and mqtt.password go together")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("mqtt.tls_cert_file and mqtt.tls_key_file go together")
        if not self.tls and (self.tls_ca_file or self.tls_cert_file):
            raise ValueError("mqtt.tls_ca_file / tls_cert_file are set but mqtt.tls is false")
        return self


# --- alerting (issue 15) ---------------------------------------------------------------------------
# One section, three owners: the store, escalation and router fields; delivery channels and
# routes; the operator API and console. Each keeps its fields in its own commented block.


def _default_escalation() -> dict[str, float]:
    # Critical (fire) pages again after 5 minutes without an acknowledgement: the time a fire-alarm
    # receiving centre allows before calling the next keyholder. Warnings after 30 minutes; info
    # (cleared notices) never escalates.
    return {"critical": 300.0, "warning": 1800.0}


# Delivery channels and routes (alerting/channels/, alerting/routing.py, alerting/delivery.py).
ALERT_SEVERITIES = ("critical", "warning", "info")
ALERT_KINDS = ("fire", "sensor_stuck", "sensor_silent")
NOTIFICATION_STATES = ("raised", "acknowledged", "cleared", "resolved", "escalated")
_CHANNEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class WebhookChannel(Section):
    """A generic JSON webhook: POST of the notification, signed with HMAC-SHA256."""

    type: Literal["webhook"]
    name: str = Field(pattern=_CHANNEL_NAME, description="the name routes use")
    url: str = Field(pattern=r"^https?://", description="where the notification is POSTed")
    secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of the X-Smoke-Signature header; empty sends no signature")
    timeout_s: float = Field(5.0, gt=0, description="connect + answer timeout of one attempt")


class AlertmanagerChannel(Section):
    """Prometheus Alertmanager's v2 API: its routing, grouping, inhibition and paging take over."""

    type: Literal["alertmanager"]
    name: str = Field(pattern=_CHANNEL_NAME, description="the name routes use")
    url: str = Field(pattern=r"^https?://", description="Alertmanager base URL (POST {url}/api/v2/alerts)")
    incident_url: str = Field(
        "", description="generatorURL of an alert: a link with {alert_id}, e.g. to the operator console; "
                        "empty: none")
    timeout_s: float = Field(5.0, gt=0, description="connect + answer timeout of one attempt")


class EmailChannel(Section):
    """Email over SMTP (smtplib): one message per notification."""

    type: Literal["email"]
    name: str = Field(pattern=_CHANNEL_NAME, description="the name routes use")
    host: str = Field(min_length=1, description="SMTP server")
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = Field(False, description="upgrade the connection with STARTTLS before sending")
    username: str | None = Field(None, description="SMTP AUTH user; empty: no authentication")
    password: SecretStr | None = Field(None, description="SMTP AUTH password")
    sender: str = Field(min_length=3, description="From address")
    recipients: list[str] = Field(min_length=1, description="To addresses")
    timeout_s: float = Field(10.0, gt=0, description="timeout of one SMTP conversation")


ChannelSettings = Annotated[WebhookChannel | AlertmanagerChannel | EmailChannel, Field(discriminator="type")]


class RouteRule(Section):
    """Which channels get a notification: every listed matcher must match (an empty one matches all)."""

    channels: list[str] = Field(min_length=1, description="channel names this rule sends to")
    severity: list[str] = Field([], description=f"severities matched ({', '.join(ALERT_SEVERITIES)})")
    kind: list[str] = Field([], description=f"kinds matched ({', '.join(ALERT_KINDS)})")
    state: list[str] = Field([], description=f"states matched ({', '.join(NOTIFICATION_STATES)})")
    zone: list[str] = Field([], description="sensor zones matched (sensors table)")
    site: list[str] = Field([], description="sensor sites matched (sensors table)")
    test: bool | None = Field(None, description="true: test alarms only; false: real alarms only; empty: both")
    stop: bool = Field(False, description="when this rule matches, later rules are not considered")

    @field_validator("severity")
    @classmethod
    def _known_severities(cls, value: list[str]) -> list[str]:
        return _known(value, ALERT_SEVERITIES, "severity")

    @field_validator("kind")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        return _known(value, ALERT_KINDS, "kind")

    @field_validator("state")
    @classmethod
    def _known_states(cls, value: list[str]) -> list[str]:
        return _known(value, NOTIFICATION_STATES, "state")


def _known(value: list[str], known: tuple[str, ...], what: str) -> list[str]:
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {list(known)}")
    return value


class AlertingSettings(Section):
    """The alert service: its store, lifecycle timers, router, delivery and operator API."""

    # Store, lifecycle and router (alerting/store.py, alerting/lifecycle.py, alerting/router.py).
    store_dsn: str = Field(
        "sqlite:///data/alerts.db",
        description="SQLAlchemy URL of the alert store: a SQLite file (relative paths from the working "
                    "directory, like the other data paths) or postgresql+psycopg://user:pass@host/db")
    sensors_file: Path = Field(
        Path("configs/sensors.yaml"),
        description="sensor_id -> site/building/floor/zone/description, loaded into the store's sensors table "
                    "at router start (entries edited through the API are kept)")
    escalate_after_s: dict[str, float] = Field(
        default_factory=_default_escalation,
        description="seconds an incident of this severity may stay unacknowledged before it escalates; "
                    "a severity not listed never escalates")
    escalation_check_s: float = Field(5.0, gt=0, description="how often the router looks for incidents to escalate")
    router_name: str = Field("alert-router", min_length=1,
                             description="name of the detached router actor in ray.namespace")
    router_num_cpus: float = Field(0.25, ge=0, description="logical CPUs reserved for the router actor")
    router_poll_max_records: int = Field(500, ge=1, description="alert events the router reads per poll at most")
    router_poll_timeout_ms: int = Field(200, ge=1, description="how long one router poll waits for events")
    router_max_restarts: int = Field(-1, ge=-1,
                                     description="times Ray restarts a crashed router (-1: always)")
    router_stale_s: float = Field(30.0, gt=0, description="`smoke status` shows the router degraded when its "
                                                          "loop has not turned for this long")

    # Operator API and console (serve/operator, serve/console): Serve applications beside the prediction app.
    operator_app_name: str = Field("smoke-operator", min_length=1,
                                   description="Serve application of the operator API (incidents, silences, "
                                               "sensors, KPIs)")
    operator_route_prefix: str = Field("/ops", pattern=r"^/[A-Za-z0-9._-]+$",
                                       description="route prefix of the operator API on Serve's HTTP port")
    console_app_name: str = Field("smoke-console", min_length=1,
                                  description="Serve application of the operator console (a static page)")
    console_route_prefix: str = Field("/console", pattern=r"^/[A-Za-z0-9._-]+$",
                                      description="route prefix of the operator console on Serve's HTTP port")
    console_poll_s: float = Field(0.5, gt=0, le=60, description="how often an open console page asks the "
                                                                "operator API for changes")
    operator_page_limit: int = Field(500, ge=1, le=10_000, description="incidents one GET /incidents page "
                                                                       "returns at most")

    @field_validator("escalate_after_s")
    @classmethod
    def _positive_delays(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not v > 0}
        if bad:
            raise ValueError(f"escalation delays must be positive seconds, got {bad}")
        return value

    # Delivery channels, routes and retries (alerting/channels/, alerting/routing.py, alerting/delivery.py).
    channels: list[ChannelSettings] = Field(
        [], description="delivery channels (webhook, alertmanager, email), each with a unique name")
    routes: list[RouteRule] = Field(
        [], description="rules in order; a notification goes to the channels of every matching rule "
                        "(up to one with stop). No rules: every channel gets every notification")
    delivery_retry_base_s: float = Field(1.0, gt=0, description="delay before the first retry of a failed delivery")
    delivery_retry_factor: float = Field(2.0, ge=1, description="each further retry waits this many times longer")
    delivery_retry_cap_s: float = Field(
        30.0, gt=0, description="longest wait between retries: a receiver back from an outage is reached "
                                "within this")
    delivery_max_attempts: int = Field(
        120, ge=1, description="attempts before a delivery is given up (failed_permanently); the default "
                               "keeps trying for about an hour")
    delivery_poll_s: float = Field(
        0.5, gt=0, description="how often an idle channel worker looks for due deliveries (the router also "
                               "wakes it when it records one)")
    delivery_batch: int = Field(100, ge=1, description="due deliveries a channel worker reads at a time")

    @field_validator("channels")
    @classmethod
    def _unique_channel_names(cls, value: list) -> list:
        names = [c.name for c in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"channel names must be unique, repeated: {twice}")
        return value


class Settings(Section):
    kafka: KafkaSettings = KafkaSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    stream: StreamSettings = StreamSettings()
    train: TrainSettings = TrainSettings()
    retrain: RetrainSettings = RetrainSettings()
    serve: ServeSettings = ServeSettings()
    ray: RaySettings = RaySettings()
    detection: DetectionSettings = DetectionSettings()
    mqtt: MqttSettings = MqttSettings()
    alerting: AlertingSettings = AlertingSettings()


class SettingsError(ValueError):
    """A settings file or override that does not validate; the message names the key."""


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the YAML (default ``configs/pipeline.yaml``), apply environment overrides, validate."""
    environ = os.environ if environ is None else environ
    if path is not None and not Path(path).is_file():
        raise SettingsError(f"{path}: no such settings file")
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(path.read_text()) if path.exists() else {}
    except yaml.YAMLError as err:
        raise SettingsError(f"{path}: not valid YAML: {err}") from None
    data: dict[str, Any] = raw or {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: the top level must be a mapping of sections")
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and "__" in key:
            parts = key[len(ENV_PREFIX):].lower().split("__")
            _set_nested(data, parts, _override_value(key, parts, value))
    if environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        data.setdefault("kafka", {})["bootstrap_servers"] = environ["KAFKA_BOOTSTRAP_SERVERS"]
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        got = f" (got {first['input']!r})" if "input" in first and not isinstance(first["input"], dict) else ""
        raise SettingsError(f"{where}: {first['msg']}{got}") from None


def _override_value(name: str, parts: list[str], text: str) -> Any:
    """An environment override as the setting it names expects it (see the module docstring)."""
    if text == "":
        return None
    annotation: Any = Settings
    for depth, part in enumerate(parts):
        model = _model_of(annotation)
        if model is not None:
            field = model.model_fields.get(part)
            if field is None:
                if depth == 0:
                    raise SettingsError(f"{name}: no settings section {part!r} (sections: "
                                        f"{', '.join(Settings.model_fields)})")
                raise SettingsError(f"{name}: {'.'.join(parts[:depth])} has no setting {part!r}")
            annotation = field.annotation
        elif typing.get_origin(_optional_of(annotation)) is dict:
            annotation = typing.get_args(_optional_of(annotation))[1]  # a key of a mapping setting
        else:
            raise SettingsError(f"{name}: {'.'.join(parts[:depth])} is not a section")
    target = _optional_of(annotation)
    origin = typing.get_origin(target)
    structured = _model_of(target) is not None or origin is dict or (
        origin is list and typing.get_args(target)[:1] != (str,))
    if structured or (origin is list and text.lstrip().startswith("[")):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SettingsError(f"{name}: not valid YAML/JSON for {'.'.join(parts)}: {err}") from None
    return text  # strings stay strings; numbers and booleans are converted by validation


def _optional_of(annotation: Any) -> Any:
    """``X`` of ``X | None`` (other annotations unchanged)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _model_of(annotation: Any) -> type[BaseModel] | None:
    target = _optional_of(annotation)
    return target if isinstance(target, type) and issubclass(target, BaseModel) else None


def _set_nested(data: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        data = data.setdefault(part, {})
    data[parts[-1]] = value
