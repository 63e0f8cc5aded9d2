"""The stream's custom metrics (names and tags: ``docs/metrics.md``), via ``ray.util.metrics``.

Ray exports them at every node's metrics port with a ``ray_`` prefix. They are
created inside the actor process that records them (Ray's metric objects bind
to the process's core worker), hence one small class per role.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from ray.util.metrics import Counter, Gauge, Histogram

# Ray 2.60 stops exporting a gauge value not set again within two export intervals (20 s by
# default; measured: a gauge set once is gone from the metrics port 20-30 s later). Gauges set
# only on change (the model version) are set again at this pace.
GAUGE_REFRESH_S = 5.0
LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
CHECKPOINT_BOUNDARIES = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


class WorkerMetrics:
    """Metrics recorded by a PartitionWorker."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.events = Counter("smoke_events_processed", "readings accepted and processed",
                              tag_keys=("partition",))
        self.rejected = Counter("smoke_events_rejected", "readings sent to the dead-letter topic, by reason",
                                tag_keys=("reason",))
        self.alerts = Counter("smoke_alerts", "alerts emitted", tag_keys=("kind", "severity", "state"))
        self.latency = Histogram("smoke_detection_latency_seconds",
                                 "from the reading's event time (clock=event) or its arrival at the broker "
                                 "(clock=ingest) to the alert", boundaries=LATENCY_BOUNDARIES, tag_keys=("clock",))
        self.lag = Gauge("smoke_consumer_lag", "high watermark minus next offset to read",
                         tag_keys=("partition",))
        self.checkpoint = Histogram("smoke_checkpoint_duration_seconds", "time of one checkpoint commit",
                                    boundaries=CHECKPOINT_BOUNDARIES)
        self.sensors = Gauge("smoke_state_sensors", "sensors held in memory", tag_keys=("worker",))
        self.state_bytes = Gauge("smoke_state_bytes", "bytes of per-sensor state held in memory",
                                 tag_keys=("worker",))
        self.model = Gauge("smoke_model_version", "model version in use (value 1)",
                           tag_keys=("component", "version"))
        self._model_version: str | None = None
        self._model_version_set_at = 0.0

    def processed(self, partition: int, n: int) -> None:
        if n:
            self.events.inc(n, tags={"partition": str(partition)})

    def rejected_reasons(self, reasons: Iterable[str]) -> None:
        for reason in reasons:
            self.rejected.inc(1, tags={"reason": reason})

    def alert(self, kind: str, severity: str, state: str, event_latency: float, ingest_latency: float | None) -> None:
        self.alerts.inc(1, tags={"kind": kind, "severity": severity, "state": state})
        # Clocks of sensors and of our hosts disagree a little; a negative span is recorded as 0.
        self.latency.observe(max(event_latency, 0.0), tags={"clock": "event"})
        if ingest_latency is not None:
            self.latency.observe(max(ingest_latency, 0.0), tags={"clock": "ingest"})

    def consumer_lag(self, partition: int, lag: int) -> None:
        self.lag.set(lag, tags={"partition": str(partition)})

    def state(self, sensors: int, nbytes: int) -> None:
        self.sensors.set(sensors, tags={"worker": self.worker})
        self.state_bytes.set(nbytes, tags={"worker": self.worker})

    def model_version(self, version: str | None) -> None:
        version = version or "none"
        now = time.monotonic()
        if version == self._model_version and now - self._model_version_set_at < GAUGE_REFRESH_S:
            return
        if self._model_version is not None and version != self._model_version:
            self.model.set(0, tags={"component": "stream", "version": self._model_version})
        self.model.set(1, tags={"component": "stream", "version": version})
        self._model_version = version
        self._model_version_set_at = now


class SupervisorMetrics:
    def __init__(self) -> None:
        self.workers = Gauge("smoke_workers_alive", "PartitionWorker actors alive")

    def workers_alive(self, n: int) -> None:
        self.workers.set(n)
