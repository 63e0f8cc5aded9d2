"""Where each sensor is: ``configs/sensors.yaml`` read into :class:`SensorInfo` records.

The file maps sensor ids to their place, so that an operator reads "HQ, Building B,
floor 2, kitchen" and not ``sim-00064``::

    sensors:
      sim-00000: {site: HQ, building: A, floor: "0", zone: lobby, description: main entrance}

The router loads it into the store's sensors table at start (entries changed
through the operator API since are kept: the file seeds, the table is the truth).
A malformed file is an error naming the entry, raised before anything is written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from alerting.notification import Location

FIELDS = ("site", "building", "floor", "zone", "description")


class SensorsFileError(ValueError):
    """The sensors file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class SensorInfo:
    """One sensor's place (empty strings where unknown)."""

    sensor_id: str
    site: str = ""
    building: str = ""
    floor: str = ""
    zone: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.sensor_id, str) or not self.sensor_id.strip():
            raise ValueError("sensor_id: must be a non-empty string")
        for name in FIELDS:
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: must be a string (got {getattr(self, name)!r})")

    @property
    def location(self) -> Location:
        return Location(**{name: getattr(self, name) for name in FIELDS})

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def parse_sensors(doc: Any, source: str = "sensors file") -> list[SensorInfo]:
    """The records of a parsed sensors document.

    >>> parse_sensors({"sensors": {"s1": {"site": "HQ", "floor": 2}}})
    [SensorInfo(sensor_id='s1', site='HQ', building='', floor='2', zone='', description='')]
    >>> parse_sensors({"sensors": {"s1": {"room": "x"}}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    alerting.sensors.SensorsFileError: sensors file: sensors.s1: unknown field 'room' (fields: site, ...)
    """
    if doc is None:
        return []
    if not isinstance(doc, dict) or set(doc) - {"sensors"}:
        raise SensorsFileError(f"{source}: the top level must be a mapping with one key, 'sensors'")
    entries = doc.get("sensors") or {}
    if not isinstance(entries, dict):
        raise SensorsFileError(f"{source}: 'sensors' must map sensor ids to their place")
    out = []
    for sensor_id, place in entries.items():
        where = f"{source}: sensors.{sensor_id}"
        place = place or {}
        if not isinstance(place, dict):
            raise SensorsFileError(f"{where}: must be a mapping of {', '.join(FIELDS)}")
        unknown = sorted(set(place) - set(FIELDS))
        if unknown:
            raise SensorsFileError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
        bad = [k for k, v in place.items() if v is not None and not isinstance(v, str | int | float)]
        if bad:
            raise SensorsFileError(f"{where}.{bad[0]}: must be text")
        try:
            out.append(SensorInfo(str(sensor_id), **{k: "" if v is None else str(v) for k, v in place.items()}))
        except ValueError as err:
            raise SensorsFileError(f"{where}: {err}") from None
    return out


def load_sensors(path: str | Path) -> list[SensorInfo]:
    """The records of a sensors file; a missing file is an error (the setting names a file that must exist)."""
    path = Path(path)
    if not path.is_file():
        raise SensorsFileError(f"{path}: no such sensors file (alerting.sensors_file)")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SensorsFileError(f"{path}: not valid YAML: {err}") from None
    return parse_sensors(doc, str(path))
