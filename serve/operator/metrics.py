"""The operator API's metrics: its request counters, and the alert service's KPIs.

The KPIs (open and unacknowledged incidents, time to acknowledge, unwanted alarms per 100
detectors per year, devices flagged under BS 5839-1) are read from the store, their one home,
never counted here. They are exported twice: as ``smoke_alert_*`` gauges in the replica's
``GET /ops/metrics`` (read at scrape time), and as Ray metrics (:class:`KpiGauges`, exported
as ``ray_smoke_alert_*`` at Ray's metrics port with the other series of docs/metrics.md, so
Prometheus, the alert rules and Grafana get them through Ray's service discovery).
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


class KpiGauges:
    """The KPIs as Ray gauges; :meth:`publish` sets them (again: Ray drops a gauge not set for 20 s)."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.open = metrics.Gauge("smoke_alert_incidents_open", "incidents someone still has to act on")
        self.unacknowledged = metrics.Gauge("smoke_alert_incidents_unacknowledged",
                                            "open incidents nobody has acknowledged")
        self.unwanted_rate = metrics.Gauge("smoke_alert_unwanted_per_100_detectors_per_year",
                                           "unwanted fire alarms per 100 detectors per year (BS 5839-1), tests "
                                           "excluded")
        self.flagged = metrics.Gauge("smoke_alert_devices_flagged",
                                     "detectors with 3 or more unwanted alarms in 12 months")
        self.ack_time = metrics.Gauge("smoke_alert_ack_time_seconds",
                                      "time from recorded to acknowledged over 12 months, by quantile",
                                      tag_keys=("quantile",))

    def publish(self, kpis: Any) -> None:
        self.open.set(kpis.open_incidents)
        self.unacknowledged.set(kpis.unacknowledged)
        self.flagged.set(len(kpis.flagged_devices))
        # No figure yet (no detectors, nothing acknowledged) is left unset, never exported as 0.
        if kpis.unwanted_per_100_detectors_per_year is not None:
            self.unwanted_rate.set(kpis.unwanted_per_100_detectors_per_year)
        for quantile, value in (("0.5", kpis.ack_time_p50_s), ("0.95", kpis.ack_time_p95_s)):
            if value is not None:
                self.ack_time.set(value, tags={"quantile": quantile})


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
