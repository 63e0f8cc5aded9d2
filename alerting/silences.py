"""Silences (maintenance windows): which alerts they cover. Pure; the store keeps them.

A silence names any subset (at least one) of sensor, zone, site and kind, and a
time range. An alert is covered when every named matcher equals the alert's
value and the time is in ``[starts_at, ends_at)``. A silenced alert is still
recorded and shown; it is only not delivered.

>>> s = SilenceSpec(zone="kitchen", starts_at=0.0, ends_at=3600.0, created_by="ops", comment="hob test")
>>> matches(s, sensor_id="sim-00001", zone="kitchen", site="HQ", kind="fire", at=10.0)
True
>>> matches(s, sensor_id="sim-00001", zone="lobby", site="HQ", kind="fire", at=10.0)
False
>>> matches(s, sensor_id="sim-00001", zone="kitchen", site="HQ", kind="fire", at=3600.0)
False
>>> SilenceSpec(starts_at=0.0, ends_at=1.0, created_by="ops")
Traceback (most recent call last):
...
alerting.silences.InvalidSilence: matchers: name at least one of sensor_id, zone, site, kind
>>> SilenceSpec(kind="fire", starts_at=5.0, ends_at=1.0, created_by="ops")
Traceback (most recent call last):
...
alerting.silences.InvalidSilence: ends_at: must be after starts_at (5.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MATCHERS = ("sensor_id", "zone", "site", "kind")


class InvalidSilence(ValueError):
    """A silence that cannot be stored; the message starts with the field at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class SilenceSpec:
    """A silence to create; validated on construction (``InvalidSilence`` names the field)."""

    starts_at: float
    ends_at: float
    created_by: str
    sensor_id: str | None = None
    zone: str | None = None
    site: str | None = None
    kind: str | None = None
    comment: str = ""

    def __post_init__(self) -> None:
        for name in MATCHERS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidSilence(name, "must be a non-empty string when given")
        if all(getattr(self, name) is None for name in MATCHERS):
            raise InvalidSilence("matchers", f"name at least one of {', '.join(MATCHERS)}")
        for name in ("starts_at", "ends_at"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidSilence(name, f"must be a finite time in epoch seconds (got {value!r})")
        if not self.ends_at > self.starts_at:
            raise InvalidSilence("ends_at", f"must be after starts_at ({self.starts_at})")
        if not isinstance(self.created_by, str) or not self.created_by.strip():
            raise InvalidSilence("created_by", "must name who creates the silence")


@dataclass(frozen=True)
class Silence(SilenceSpec):
    """A stored silence."""

    id: int = 0
    created_at: float = 0.0


def matches(silence: SilenceSpec, *, sensor_id: str, zone: str, site: str, kind: str, at: float) -> bool:
    """Whether ``silence`` covers an alert of this sensor, zone, site and kind at time ``at``."""
    if not silence.starts_at <= at < silence.ends_at:
        return False
    values = {"sensor_id": sensor_id, "zone": zone, "site": site, "kind": kind}
    return all(getattr(silence, name) is None or getattr(silence, name) == values[name] for name in MATCHERS)
