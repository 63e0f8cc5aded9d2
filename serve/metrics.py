"""Serve metrics: Ray metrics for Prometheus, and in-replica counters for ``/predictions/stats``.

Names and tags follow docs/metrics.md. They are defined with
``ray.serve.metrics`` so Ray adds the deployment, replica and application tags
and exports them beside its own ``ray_serve_*`` metrics as
``ray_smoke_predictions_total`` and so on.

Outside a Ray worker (the plain-uvicorn baseline of bench/serve.py) the Ray
metrics are off and only the in-process counters run.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter as _Tally
from collections import deque
from typing import Any

import numpy as np

# Seconds; predictions take about a millisecond, a slow batch can take a second.
LATENCY_BOUNDARIES = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
# Ray 2.60 drops a gauge value that has not been set again within two metrics export intervals
# (20 s by default; measured: a gauge set once is gone from the metrics port 20-30 s later), so
# the gauges are set again at this pace (see :meth:`ServeMetrics.refresh_gauges`).
GAUGE_REFRESH_S = 5.0


class ServeMetrics:
    """Counts predictions by variant and outcome, validation failures by reason, latencies."""

    def __init__(self, ray_metrics: bool = True) -> None:
        self.started = time.time()
        self.requests = 0
        self.predictions: _Tally[tuple[str, str]] = _Tally()  # (variant, outcome) -> count
        self.versions: dict[str, str] = {}  # variant -> model version of its last prediction
        self.validation_failures: _Tally[str] = _Tally()
        self.shadow_agreements = 0
        self.shadow_total = 0
        # /predict readings, the model calls that scored them, and how many of those calls were
        # @serve.batch batches (the others scored a request that was alone on the replica).
        self.predict_batching = {"readings": 0, "model_calls": 0, "batched_calls": 0, "largest_batch": 0}
        self._latencies: deque[float] = deque(maxlen=2048)  # recent request latencies, for stats
        # Every latency since start, as cumulative-histogram inputs for /metrics.
        self._latency_buckets = [0] * (len(LATENCY_BOUNDARIES) + 1)
        self._latency_sum = 0.0
        # Current gauge values, (gauge, tag items) -> value, set again by refresh_gauges.
        self._gauge_values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._ray = None
        if ray_metrics:
            from ray.serve import metrics

            self._ray = {
                "predictions": metrics.Counter(
                    "smoke_predictions", "predictions served, by model variant and outcome (fire/no_fire)",
                    tag_keys=("variant", "outcome")),
                "validation": metrics.Counter(
                    "smoke_validation_failures", "request readings rejected by validation, by reason",
                    tag_keys=("reason",)),
                "latency": metrics.Histogram(
                    "smoke_prediction_latency_seconds", "time from request parsed to prediction ready",
                    boundaries=LATENCY_BOUNDARIES, tag_keys=("variant",)),
                "drift": metrics.Gauge(
                    "smoke_feature_drift_psi", "PSI of recent request features against the model's training data",
                    tag_keys=("feature",)),
                "version": metrics.Gauge(
                    "smoke_model_version", "1 for the model version a variant serves, 0 after it is replaced",
                    tag_keys=("component", "version")),
            }

    def predicted(self, variant: str, version: str, fire: int, no_fire: int) -> None:
        self.versions[variant] = version
        for outcome, count in (("fire", fire), ("no_fire", no_fire)):
            if count:
                self.predictions[(variant, outcome)] += count
                if self._ray is not None:
                    self._ray["predictions"].inc(count, tags={"variant": variant, "outcome": outcome})

    def predict_call(self, readings: int, batched: bool) -> None:
        """One model call for ``readings`` /predict requests, through @serve.batch or not."""
        b = self.predict_batching
        b["readings"] += readings
        b["model_calls"] += 1
        b["batched_calls"] += batched
        b["largest_batch"] = max(b["largest_batch"], readings)

    def shadow(self, agreements: int, total: int) -> None:
        self.shadow_agreements += agreements
        self.shadow_total += total

    def rejected(self, reasons: list[str]) -> None:
        for reason in reasons:
            self.validation_failures[reason] += 1
            if self._ray is not None:
                self._ray["validation"].inc(1, tags={"reason": reason})

    def latency(self, seconds: float, variants: list[str]) -> None:
        self.requests += 1
        self._latencies.append(seconds)
        self._latency_buckets[bisect.bisect_left(LATENCY_BOUNDARIES, seconds)] += 1
        self._latency_sum += seconds
        if self._ray is not None:
            for variant in variants:
                self._ray["latency"].observe(seconds, tags={"variant": variant})

    def feature_drift(self, psi: dict[str, float]) -> None:
        for feature, value in psi.items():
            self._set_gauge("drift", {"feature": feature}, value)

    def model_version(self, version: str, active: bool) -> None:
        tags = {"component": "serve", "version": version}
        self._set_gauge("version", tags, 1.0 if active else 0.0)
        if not active:  # a replaced version reads 0 once, then ages out of the export
            self._gauge_values.pop(("version", tuple(sorted(tags.items()))), None)

    def refresh_gauges(self) -> None:
        """Set every current gauge value again, so that Ray keeps exporting it (see GAUGE_REFRESH_S)."""
        if self._ray is not None:
            for (gauge, tags), value in list(self._gauge_values.items()):
                self._ray[gauge].set(value, tags=dict(tags))

    def _set_gauge(self, gauge: str, tags: dict[str, str], value: float) -> None:
        self._gauge_values[(gauge, tuple(sorted(tags.items())))] = value
        if self._ray is not None:
            self._ray[gauge].set(value, tags=tags)

    def snapshot(self) -> dict[str, Any]:
        """The replica's counters as the ``/predictions/stats`` body."""
        by_variant: dict[str, dict[str, Any]] = {}
        for (variant, outcome), count in sorted(self.predictions.items()):
            entry = by_variant.setdefault(variant, {"model_version": self.versions.get(variant),
                                                    "predictions": 0, "fire": 0, "no_fire": 0})
            entry[outcome] += count
            entry["predictions"] += count
        fire = sum(v["fire"] for k, v in by_variant.items() if k != "shadow")
        no_fire = sum(v["no_fire"] for k, v in by_variant.items() if k != "shadow")
        lat = np.fromiter(self._latencies, dtype=np.float64)
        latency = ({"count": len(lat), "mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
                    "p95": float(np.percentile(lat, 95)), "p99": float(np.percentile(lat, 99))}
                   if len(lat) else {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None})
        return {
            "scope": "replica",
            "uptime_seconds": round(time.time() - self.started, 3),
            "total_requests": self.requests,
            "total_predictions": fire + no_fire,
            "fire_predictions": fire,
            "no_fire_predictions": no_fire,
            "fire_rate": fire / (fire + no_fire) if fire + no_fire else None,
            "validation_failures": dict(self.validation_failures),
            "by_variant": by_variant,
            "shadow": ({"compared": self.shadow_total, "agreement_rate": self.shadow_agreements / self.shadow_total}
                       if self.shadow_total else None),
            "latency_seconds": latency,
            "predict_batching": dict(self.predict_batching),
        }

    def prometheus_text(self, replica: str) -> bytes:
        """This replica's counters in the Prometheus text format (``GET /metrics`` on the API port).

        The same counters as ``/predictions/stats``, labelled with the replica that answered;
        the cluster-wide series (all replicas, Ray's own) are on Ray's metrics export port.
        """
        lines = [
            "# HELP smoke_api_requests_total prediction requests answered by this replica",
            "# TYPE smoke_api_requests_total counter",
            f'smoke_api_requests_total{{replica="{replica}"}} {self.requests}',
            "# HELP smoke_api_predictions_total readings scored, by model variant and outcome",
            "# TYPE smoke_api_predictions_total counter",
            *(f'smoke_api_predictions_total{{replica="{replica}",variant="{variant}",outcome="{outcome}"}} {count}'
              for (variant, outcome), count in sorted(self.predictions.items())),
            "# HELP smoke_api_validation_failures_total request readings rejected by validation, by reason",
            "# TYPE smoke_api_validation_failures_total counter",
            *(f'smoke_api_validation_failures_total{{replica="{replica}",reason="{reason}"}} {count}'
              for reason, count in sorted(self.validation_failures.items())),
            "# HELP smoke_api_request_duration_seconds time from request parsed to response ready",
            "# TYPE smoke_api_request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip([*LATENCY_BOUNDARIES, float("inf")], self._latency_buckets, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'smoke_api_request_duration_seconds_bucket{{replica="{replica}",le="{le}"}} {cumulative}')
        lines += [f'smoke_api_request_duration_seconds_sum{{replica="{replica}"}} {self._latency_sum!r}',
                  f'smoke_api_request_duration_seconds_count{{replica="{replica}"}} {cumulative}',
                  "# HELP smoke_api_uptime_seconds seconds since this replica started",
                  "# TYPE smoke_api_uptime_seconds gauge",
                  f'smoke_api_uptime_seconds{{replica="{replica}"}} {time.time() - self.started:.3f}']
        return ("\n".join(lines) + "\n").encode()
