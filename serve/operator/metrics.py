"""The operator API's ``GET /metrics``: its request counters and the alert service's KPIs, in Prometheus text.

The KPIs (unacknowledged incidents, time to acknowledge, unwanted alarms per 100 detectors
per year, devices flagged under BS 5839-1) are read from the store when Prometheus scrapes,
so every replica reports the same figures: the store is their one home, not a counter here.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class OperatorMetrics:
    """Requests answered by status class and method, acknowledgements by outcome, since the replica started."""

    def __init__(self) -> None:
        self.started = time.time()
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, status) -> count
        self.acknowledgements: Counter[str] = Counter()  # outcome -> count
        self._lock = threading.Lock()  # sync routes run in a thread pool

    def request(self, method: str, status: int) -> None:
        with self._lock:
            self.requests[(method, str(status))] += 1

    def acknowledged(self, outcome: str) -> None:
        with self._lock:
            self.acknowledgements[outcome] += 1

    def prometheus_text(self, replica: str, kpi_lines: list[str]) -> bytes:
        with self._lock:
            requests, acks = sorted(self.requests.items()), sorted(self.acknowledgements.items())
        lines = [
            "# HELP smoke_operator_requests_total operator API requests answered by this replica",
            "# TYPE smoke_operator_requests_total counter",
            *(f'smoke_operator_requests_total{{replica="{replica}",method="{m}",status="{s}"}} {n}'
              for (m, s), n in requests),
            "# HELP smoke_operator_acknowledgements_total incidents acknowledged through this replica, by outcome",
            "# TYPE smoke_operator_acknowledgements_total counter",
            *(f'smoke_operator_acknowledgements_total{{replica="{replica}",outcome="{o}"}} {n}' for o, n in acks),
            "# HELP smoke_operator_uptime_seconds seconds since this replica started",
            "# TYPE smoke_operator_uptime_seconds gauge",
            f'smoke_operator_uptime_seconds{{replica="{replica}"}} {time.time() - self.started:.3f}',
            *kpi_lines,
        ]
        return ("\n".join(lines) + "\n").encode()


def gauge(name: str, help_text: str, samples: list[tuple[dict[str, str], Any]]) -> list[str]:
    """One Prometheus gauge with its samples (label set, value); a None value is left out, never written as 0.

    >>> gauge("x", "an x", [({"a": "1"}, 2.5), ({}, None)])
    ['# HELP x an x', '# TYPE x gauge', 'x{a="1"} 2.5']
    """
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        if value is None:
            continue
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{text}}} {float(value)!r}" if text else f"{name} {float(value)!r}")
    return lines


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class RequestCounter:
    """ASGI middleware counting every answer by method and status."""

    def __init__(self, app, metrics: OperatorMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted(message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.request(scope["method"], message["status"])
            await send(message)

        await self.app(scope, receive, counted)
