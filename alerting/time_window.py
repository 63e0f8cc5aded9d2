"""Times an operator types: "2h" ago, an ISO 8601 instant, or epoch seconds; durations such as "90m".

The CLI (``smoke alerts history --since 2h``, ``smoke alerts silence --for 2h``) and the
operator API (``GET /ops/incidents?since=...``) read them with the same two functions, so a
time means the same thing wherever it is typed.

>>> parse_duration("90m"), parse_duration("2h"), parse_duration("1d12h"), parse_duration("45")
(5400.0, 7200.0, 129600.0, 45.0)
>>> parse_instant("2h", now=10_000.0)
2800.0
>>> parse_instant("2026-01-01T00:00:00Z", now=0.0)
1767225600.0
>>> parse_instant("1767225600", now=0.0)
1767225600.0
>>> parse_duration("soon")
Traceback (most recent call last):
...
ValueError: 'soon' is not a duration: use 30s, 90m, 2h, 7d (or a number of seconds)
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?[smhdw])+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds of "30s", "90m", "2h", "7d", "1w", combinations like "1h30m", or a plain number of seconds."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        if not _DURATION.match(value):
            raise ValueError(f"{text!r} is not a duration: use 30s, 90m, 2h, 7d (or a number of seconds)") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def parse_instant(text: str, *, now: float) -> float:
    """Epoch seconds of a duration ago ("2h": two hours before ``now``), an ISO 8601 time, or epoch seconds.

    An ISO time without an offset is UTC (what the API and the CLI print).
    """
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"{text!r} is not a time")
        return seconds
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use a duration ago (2h, 30m), an ISO 8601 time "
                         f"(2026-01-01T08:00:00Z) or epoch seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def format_instant(epoch: float | None) -> str:
    """An epoch time as ISO 8601 UTC to the second ("" for None), as the CLI prints times.

    >>> format_instant(1767225600.0), format_instant(None)
    ('2026-01-01T00:00:00Z', '')
    """
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
