"""Offline detection quality: the fleet simulator's ground truth against the engine's alerts.

Runs :class:`ingest.simulator.FleetSimulator` as fast as the CPU allows, feeds
its batches through :func:`train.features.compute_features` and a
:class:`actors.detection.DetectionEngine` exactly as a partition worker does
(arrival time = event time, ``tick`` after every batch), then matches alerts to
the ground-truth incident log:

- **fire incidents** (smouldering, flaming): detected when a ``fire`` alert is
  raised between the incident's start and its end plus ``grace_s``; *exactly
  one* when one alert is; time-to-detect = event time of the raise - start.
  Only incidents that ended before the run did are scored (the others are
  counted as ``censored``). An undetected incident that began while the
  sensor's previous fire alert was still raised is counted as ``merged``
  (back-to-back incidents page once); it still counts against the rates.
- **nuisance incidents** (cooking/steam): any ``fire`` alert in the same
  window is a false alert.
- **quiet time**: ``fire`` alerts outside every incident window of their
  sensor are false alerts, per 100 sensor-hours of quiet time.
- **stuck sensors**: detected when ``sensor_stuck`` is raised for the sensor;
  the stuck measurement is in the log, and signals the detector does not
  watch (TVOC, eCO2 by default) are reported apart.

Command (the figures in docs/detection.md come from it)::

    python -m bench.detection_quality --sensors 200 --minutes 60 --seed 42
    python -m bench.detection_quality --state-bytes 10000
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from actors.detection import DetectionEngine
from ingest.alert_message import FIRE, RAISED, SILENT, STUCK, AlertEvent
from ingest.incidents import IncidentKind
from ingest.settings import DetectionSettings, SimulatorSettings, load_settings
from ingest.simulator import STUCK as STUCK_INCIDENT
from ingest.simulator import FleetSimulator, Incident

FIRE_KINDS = (str(IncidentKind.SMOULDERING), str(IncidentKind.FLAMING), str(IncidentKind.CANDLE),
              str(IncidentKind.GAS))


@dataclass
class KindQuality:
    """Detection of one kind of injected incident."""

    kind: str
    incidents: int = 0  # scored (ended within the run)
    censored: int = 0  # still running when the run ended
    detected: int = 0
    exactly_one: int = 0
    merged: int = 0  # undetected, but began while the sensor's previous fire alert was still raised
    alerts: int = 0  # raised alerts matched to these incidents
    ttd_s: list[float] = field(default_factory=list)
    # Incidents not detected exactly once: the incident and the raise times (seconds from its start).
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def detection_rate(self) -> float:
        return self.detected / self.incidents if self.incidents else math.nan

    @property
    def exactly_one_rate(self) -> float:
        return self.exactly_one / self.incidents if self.incidents else math.nan

    def ttd_percentile(self, q: float) -> float:
        return float(np.percentile(self.ttd_s, q)) if self.ttd_s else math.nan

    def summary(self) -> dict[str, Any]:
        return {"failures": self.failures, "kind": self.kind, "incidents": self.incidents, "censored": self.censored,
                "detected": self.detected, "detection_rate": self.detection_rate,
                "exactly_one": self.exactly_one, "exactly_one_rate": self.exactly_one_rate, "merged": self.merged,
                "alerts": self.alerts, "ttd_p50_s": self.ttd_percentile(50), "ttd_p95_s": self.ttd_percentile(95),
                "ttd_max_s": max(self.ttd_s) if self.ttd_s else math.nan}


@dataclass
class QualityReport:
    sensors: int
    duration_s: float
    readings: int
    dropped: int
    kinds: dict[str, KindQuality]
    nuisance_incidents: int
    nuisance_false_alerts: int
    nuisance_hours: float
    quiet_sensor_hours: float
    quiet_false_alerts: int
    stuck: KindQuality
    stuck_unwatched: int  # stuck measurements the stuck detector does not watch
    stuck_false_alerts: int
    silent_alerts: int
    alerts_total: int
    wall_s: float
    false_alert_examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def quiet_false_per_100h(self) -> float:
        return 100.0 * self.quiet_false_alerts / self.quiet_sensor_hours if self.quiet_sensor_hours else math.nan

    @property
    def nuisance_false_per_100h(self) -> float:
        return 100.0 * self.nuisance_false_alerts / self.nuisance_hours if self.nuisance_hours else math.nan

    @property
    def sensor_hours(self) -> float:
        return self.sensors * self.duration_s / 3600.0

    def fire(self) -> KindQuality:
        """All fire kinds together."""
        total = KindQuality("fire (all kinds)")
        for kq in self.kinds.values():
            total.incidents += kq.incidents
            total.censored += kq.censored
            total.detected += kq.detected
            total.exactly_one += kq.exactly_one
            total.merged += kq.merged
            total.alerts += kq.alerts
            total.ttd_s += kq.ttd_s
            total.failures += kq.failures
        return total

    def to_markdown(self) -> str:
        rows = [*self.kinds.values(), self.fire(), self.stuck]
        lines = [
            f"{self.sensors} sensors x {self.duration_s / 60:.0f} simulated minutes "
            f"({self.readings:,} readings, {self.dropped:,} dropped by the simulator), {self.wall_s:.1f} s wall",
            "",
            "| incident kind | scored | censored | detected | exactly one alert | merged | TTD p50 (s) | TTD p95 (s) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for kq in rows:
            lines.append(f"| {kq.kind} | {kq.incidents} | {kq.censored} | {kq.detected} ({_pct(kq.detection_rate)}) "
                         f"| {kq.exactly_one} ({_pct(kq.exactly_one_rate)}) | {kq.merged} "
                         f"| {kq.ttd_percentile(50):.1f} "
                         f"| {kq.ttd_percentile(95):.1f} |")
        lines += [
            "",
            f"- nuisance (cooking/steam): {self.nuisance_false_alerts} fire alerts in {self.nuisance_incidents} "
            f"incidents ({self.nuisance_hours:.2f} h): {self.nuisance_false_per_100h:.2f} per 100 sensor-hours",
            f"- quiet time: {self.quiet_false_alerts} fire alerts in {self.quiet_sensor_hours:.1f} sensor-hours: "
            f"{self.quiet_false_per_100h:.2f} per 100 sensor-hours",
            f"- stuck: {self.stuck_unwatched} stuck on an unwatched signal (TVOC/eCO2), "
            f"{self.stuck_false_alerts} sensor_stuck alerts on healthy sensors",
            f"- sensor_silent alerts: {self.silent_alerts}; alerts in total: {self.alerts_total}",
        ]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("kinds", "stuck")}
        out["kinds"] = {k: v.summary() for k, v in self.kinds.items()}
        out["fire"] = self.fire().summary()
        out["stuck"] = self.stuck.summary()
        out["quiet_false_per_100h"] = self.quiet_false_per_100h
        out["nuisance_false_per_100h"] = self.nuisance_false_per_100h
        return out


def run_simulation(simulator: SimulatorSettings, detection: DetectionSettings, duration_s: float, *,
                   model: Any | None = None, start_time: float = 1_700_000_000.0
                   ) -> tuple[list[AlertEvent], FleetSimulator, int]:
    """Feed the simulator through features and the engine as a worker does; returns alerts, simulator, readings."""
    sim = FleetSimulator(simulator, start_time=start_time)
    engine = DetectionEngine(detection, model, clock=lambda: 0.0)
    alerts: list[AlertEvent] = []
    readings = 0
    for batch in sim.batches(batch_size=simulator.sensors, duration_s=duration_s):
        alerts += engine.process(batch.sensor_ids, batch.timestamps, batch.values, batch.timestamps)[1]
        alerts += engine.tick(float(batch.timestamps[-1]))
        readings += len(batch)
    return alerts, sim, readings


def evaluate(simulator: SimulatorSettings, detection: DetectionSettings, duration_s: float, *,
             model: Any | None = None, grace_s: float = 120.0, start_time: float = 1_700_000_000.0
             ) -> QualityReport:
    """Run the simulator through the engine and score the alerts against the incident log."""
    began = time.perf_counter()
    alerts, sim, readings = run_simulation(simulator, detection, duration_s, model=model, start_time=start_time)
    end_time = start_time + duration_s
    raised: dict[tuple[str, str], list[float]] = defaultdict(list)
    open_fire: dict[str, list[tuple[float, float]]] = defaultdict(list)  # (raised, cleared) event times
    for a in alerts:
        if a.state == RAISED:
            raised[(a.sensor_id, a.kind)].append(a.event_time)
            if a.kind == FIRE:
                open_fire[a.sensor_id].append((a.event_time, math.inf))
        elif a.kind == FIRE and open_fire[a.sensor_id]:
            open_fire[a.sensor_id][-1] = (open_fire[a.sensor_id][-1][0], a.event_time)
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    kinds = {k: KindQuality(k) for k in FIRE_KINDS if any(i.kind == k for i in sim.incidents)}
    nuisance_count = nuisance_false = 0
    nuisance_hours = incident_hours = 0.0
    stuck = KindQuality("sensor_stuck")
    stuck_unwatched = 0
    stuck_sensors: set[str] = set()
    watched = set(detection.stuck.signals)
    examples: list[dict[str, Any]] = []
    # An incident's window ends at its end plus grace_s, or when the sensor's next incident starts.
    next_start: dict[int, float] = {}
    by_sensor: dict[str, list[int]] = defaultdict(list)
    for k, incident in enumerate(sim.incidents):
        if incident.kind != STUCK_INCIDENT:
            by_sensor[incident.sensor_id].append(k)
    for ks in by_sensor.values():
        for k, later in itertools.pairwise(ks):
            next_start[k] = sim.incidents[later].start
    for k, incident in enumerate(sim.incidents):
        if incident.kind == STUCK_INCIDENT:
            stuck_sensors.add(incident.sensor_id)
            if incident.detail not in watched:
                stuck_unwatched += 1
                continue
            _score(stuck, incident, raised[(incident.sensor_id, STUCK)], end_time, math.inf)
            continue
        end = min(float(incident.end if incident.end is not None else end_time), end_time)
        window_end = min(end + grace_s, next_start.get(k, math.inf))
        windows[incident.sensor_id].append((incident.start, window_end))
        incident_hours += max(0.0, end - incident.start) / 3600.0
        if incident.is_fire:
            _score(kinds[incident.kind], incident, raised[(incident.sensor_id, FIRE)], end_time, window_end,
                   open_fire[incident.sensor_id])
        else:
            nuisance_count += 1
            nuisance_hours += max(0.0, end - incident.start) / 3600.0
            hits = _within(raised[(incident.sensor_id, FIRE)], incident.start, window_end)
            nuisance_false += len(hits)
            examples += [{"sensor_id": incident.sensor_id, "kind": incident.kind, "event_time": t,
                          "incident_start": incident.start} for t in hits]
    quiet_false = 0
    for (sensor_id, kind), times in raised.items():
        if kind != FIRE:
            continue
        for t in times:
            if not any(lo <= t <= hi for lo, hi in windows[sensor_id]):
                quiet_false += 1
                examples.append({"sensor_id": sensor_id, "kind": "quiet", "event_time": t})
    stuck_false = sum(len(v) for (s, k), v in raised.items() if k == STUCK and s not in stuck_sensors)
    sensor_hours = simulator.sensors * duration_s / 3600.0
    return QualityReport(
        sensors=simulator.sensors, duration_s=duration_s, readings=readings, dropped=sim.dropped, kinds=kinds,
        nuisance_incidents=nuisance_count, nuisance_false_alerts=nuisance_false, nuisance_hours=nuisance_hours,
        quiet_sensor_hours=sensor_hours - incident_hours, quiet_false_alerts=quiet_false, stuck=stuck,
        stuck_unwatched=stuck_unwatched, stuck_false_alerts=stuck_false,
        silent_alerts=sum(1 for a in alerts if a.kind == SILENT and a.state == RAISED),
        alerts_total=len(alerts), wall_s=time.perf_counter() - began, false_alert_examples=examples[:20])


def state_bytes_per_sensor(detection: DetectionSettings, sensors: int = 10_000) -> dict[str, float]:
    """Memory of the engine's per-sensor state with ``sensors`` sensors: its own estimate and tracemalloc's."""
    import tracemalloc

    ids = [f"sensor-{i:06d}" for i in range(sensors)]
    stamps = np.full(sensors, 1_700_000_000.0)
    rng = np.random.default_rng(0)
    values = np.abs(rng.normal(100.0, 10.0, (sensors, 12))) + 400.0
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = DetectionEngine(detection, capacity=sensors)
    engine.process(ids, stamps, values, stamps)
    allocated = (tracemalloc.get_traced_memory()[0] - before) / sensors
    tracemalloc.stop()
    return {"sensors": sensors, "estimated_bytes": engine.nbytes_per_sensor(), "allocated_bytes": allocated}


def _within(times: list[float], lo: float, hi: float) -> list[float]:
    return [t for t in times if lo <= t <= hi]


def _score(quality: KindQuality, incident: Incident, raised_times: list[float], end_time: float,
           window_end: float, open_alerts: Sequence[tuple[float, float]] = ()) -> None:
    if incident.end is not None and incident.end > end_time:
        quality.censored += 1
        return
    hits = _within(raised_times, incident.start, window_end)
    quality.incidents += 1
    quality.alerts += len(hits)
    if hits:
        quality.detected += 1
        quality.ttd_s.append(hits[0] - incident.start)
    if len(hits) == 1:
        quality.exactly_one += 1
    elif not hits and any(lo < incident.start <= hi for lo, hi in open_alerts):
        # The previous incident's alert was still raised when this one began (back-to-back incidents):
        # the site is already paged, and by design it is not paged again.
        quality.merged += 1
    else:
        quality.failures.append({**asdict(incident), "raised_after_s": [round(t - incident.start, 1) for t in hits],
                                 "window_end_after_s": round(window_end - incident.start, 1)})


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sensors", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--incidents-per-sensor-hour", type=float, default=None)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--with-model", action="store_true",
                        help="add the registry's production model (train.registry) as the ML channel")
    parser.add_argument("--state-bytes", type=int, metavar="SENSORS",
                        help="instead, measure the engine's state per sensor with this many sensors")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.state_bytes:
        measured = state_bytes_per_sensor(settings.detection, args.state_bytes)
        print(f"{measured['sensors']:,} sensors: {measured['estimated_bytes']:.0f} B/sensor "
              f"(nbytes_per_sensor), {measured['allocated_bytes']:.0f} B/sensor allocated (tracemalloc)")
        return
    update: dict[str, Any] = {"sensors": args.sensors, "rate": float(args.sensors), "seed": args.seed}
    if args.incidents_per_sensor_hour is not None:
        update["incidents_per_sensor_hour"] = args.incidents_per_sensor_hour
    simulator = settings.simulator.model_copy(update=update)
    model = None
    if args.with_model:
        from train.registry import ModelRegistry

        model = ModelRegistry(settings.train.registry_dir, settings.train.model_name).load()
        print(f"with model {model!r}, threshold {model.threshold}")
    report = evaluate(simulator, settings.detection, args.minutes * 60.0, model=model)
    if args.json:
        import orjson

        print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(report.to_markdown())


if __name__ == "__main__":
    main()
