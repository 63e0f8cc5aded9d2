"""The sensor reading: one source of truth for field names, units, ranges and aliases.

Every other part of the system (validation, the simulator, the loader, features,
the stream workers and the HTTP API) takes field names from here.

The sensor kit is the one of the Kaggle "Smoke Detection Dataset". Plausible
ranges come from the datasheets of the sensor kinds it uses:

- temperature and humidity: Bosch BME280 / Sensirion SHT3x class sensors,
  operating range -40..85 C (SHT3x to 125 C), 0..100 %RH;
- pressure: Bosch BME280 / BMP388, 300..1100 hPa;
- TVOC, eCO2, raw H2 and raw ethanol: Sensirion SGP30, TVOC 0..60,000 ppb,
  eCO2 400..60,000 ppm, raw signals are unsigned 16-bit ticks (0..65,535);
- particulate matter: Sensirion SPS30. Its datasheet specifies 0..1,000 ug/m3 and
  0..3,000 #/cm3, but the device keeps reporting far above that in dense smoke
  (the Kaggle data reaches PM2.5 45,432 and NC0.5 61,482). Rejecting those would
  drop exactly the readings that matter, so the range accepts the device's
  output up to 100,000 and rejects only negative or absurd values.

A value outside its range is rejected with reason ``out_of_range``; nothing is
clamped or repaired.
"""

from __future__ import annotations

from dataclasses import dataclass

# UTC and CNT are columns of the Kaggle CSV that leak the label (the recording
# sessions are contiguous in time and CNT counts samples within a session).
# They are never model features; see train.features.
LEAKY_COLUMNS: frozenset[str] = frozenset({"UTC", "CNT"})

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SENSOR_ID_LENGTH = 128
# Epoch seconds accepted as a reading time: 2000-01-01 .. 2100-01-01.
MIN_EPOCH_SECONDS = 946_684_800.0
MAX_EPOCH_SECONDS = 4_102_444_800.0


@dataclass(frozen=True)
class Field:
    """One measurement of a reading."""

    name: str  # canonical name, with its unit
    unit: str
    low: float  # inclusive plausible range
    high: float
    kaggle: str  # header in the Kaggle CSV
    seed: str  # name in the seed project's HTTP API
    sensor: str  # datasheet the range comes from
    description: str


FIELDS: tuple[Field, ...] = (
    Field("temperature_c", "C", -40.0, 125.0, "Temperature[C]", "Temperature", "BME280/SHT3x",
          "air temperature"),
    Field("humidity_pct", "%RH", 0.0, 100.0, "Humidity[%]", "Humidity", "BME280/SHT3x",
          "relative humidity"),
    Field("tvoc_ppb", "ppb", 0.0, 60_000.0, "TVOC[ppb]", "TVOC", "SGP30",
          "total volatile organic compounds"),
    Field("eco2_ppm", "ppm", 400.0, 60_000.0, "eCO2[ppm]", "eCO2", "SGP30",
          "equivalent CO2 estimated from H2"),
    Field("raw_h2_ticks", "ticks", 0.0, 65_535.0, "Raw H2", "Raw H2", "SGP30",
          "raw molecular hydrogen signal"),
    Field("raw_ethanol_ticks", "ticks", 0.0, 65_535.0, "Raw Ethanol", "Raw Ethanol", "SGP30",
          "raw ethanol signal"),
    Field("pressure_hpa", "hPa", 300.0, 1_100.0, "Pressure[hPa]", "Pressure", "BME280/BMP388",
          "air pressure"),
    Field("pm1_0_ugm3", "ug/m3", 0.0, 100_000.0, "PM1.0", "PM1.0", "SPS30",
          "particulate matter < 1.0 um"),
    Field("pm2_5_ugm3", "ug/m3", 0.0, 100_000.0, "PM2.5", "PM2.5", "SPS30",
          "particulate matter < 2.5 um"),
    Field("nc0_5_per_cm3", "#/cm3", 0.0, 100_000.0, "NC0.5", "NC0.5", "SPS30",
          "number concentration of particles < 0.5 um"),
    Field("nc1_0_per_cm3", "#/cm3", 0.0, 100_000.0, "NC1.0", "NC1.0", "SPS30",
          "number concentration of particles < 1.0 um"),
    Field("nc2_5_per_cm3", "#/cm3", 0.0, 100_000.0, "NC2.5", "NC2.5", "SPS30",
          "number concentration of particles < 2.5 um"),
)

MEASUREMENTS: tuple[str, ...] = tuple(f.name for f in FIELDS)
FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
KAGGLE_TO_CANONICAL: dict[str, str] = {f.kaggle: f.name for f in FIELDS}
CANONICAL_TO_KAGGLE: dict[str, str] = {f.name: f.kaggle for f in FIELDS}

# Identity fields of a reading on the topic.
SENSOR_ID = "sensor_id"
TIMESTAMP = "timestamp"

# Every accepted spelling of a measurement -> its canonical name.
ALIASES: dict[str, str] = {}
for _f in FIELDS:
    for _alias in (_f.name, _f.kaggle, _f.seed):
        ALIASES[_alias] = _f.name
del _f, _alias

# Kaggle CSV columns that are not measurements.
KAGGLE_TIMESTAMP = "UTC"
KAGGLE_COUNTER = "CNT"
KAGGLE_LABEL = "Fire Alarm"
KAGGLE_HEADER: tuple[str, ...] = (
    "", KAGGLE_TIMESTAMP, *(f.kaggle for f in FIELDS), KAGGLE_COUNTER, KAGGLE_LABEL,
)

# The lake and features carry the label under this name.
LABEL = "fire_alarm"


class Reason:
    """Machine-readable rejection reasons (the DLQ header and the metrics label)."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    TOO_LARGE = "too_large"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_SENSOR_ID = "bad_sensor_id"
    CONFLICTING_ALIASES = "conflicting_aliases"

    ALL: tuple[str, ...] = (
        NOT_JSON, NOT_OBJECT, TOO_LARGE, MISSING_FIELD, WRONG_TYPE, NOT_FINITE, OUT_OF_RANGE,
        BAD_TIMESTAMP, BAD_SENSOR_ID, CONFLICTING_ALIASES,
    )
