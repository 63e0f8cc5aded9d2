"""The detection engine of a partition: one sensor state, features, detectors, fusion, alerts.

The worker calls :meth:`DetectionEngine.process` once per polled batch with the
validated readings, and :meth:`DetectionEngine.tick` on a timer. Every sensor has
one slot in the engine's table, and every part of its state lives in arrays at
that slot: the feature history (:class:`train.features.FeatureHistory`), each
detector's state and each fusion's. Per batch:

0. the sensors are looked up once, and the features of every reading are computed
   (:func:`train.features.features_for_slots`, the one implementation shared with
   the batch path);
1. stateless detectors score the whole batch at once: threshold tiers
   (:mod:`actors.detectors.thresholds`) and the ML fire probability
   (:mod:`actors.detectors.model_probability`);
2. the batch is split into *steps* holding each sensor at most once (a poll
   usually holds one reading per sensor, so usually one step), and per step the
   sequential detectors score against each sensor's state before the reading —
   EWMA z-scores (:mod:`~actors.detectors.zscore`), rate of rise
   (:mod:`~actors.detectors.rate_of_rise`), stuck signals
   (:mod:`~actors.detectors.stuck`) — fusion (:mod:`~actors.detectors.fusion`)
   turns the scores into raise/clear decisions per kind, and then the detectors
   learn the readings;
3. alerts are built only for the few rows that raised or cleared.

Everything per sensor lives in arrays indexed by a slot, so the state of a
sensor can be exported, evicted and imported (bounded state), and the whole
engine snapshotted as plain data and restored to give identical output.

>>> import numpy as np
>>> from ingest.settings import DetectionSettings
>>> engine = DetectionEngine(DetectionSettings(), clock=lambda: 0.0)
>>> values = np.tile([21.0, 45.0, 100.0, 400.0, 13000.0, 19900.0, 938.0, 1.0, 1.3, 6.5, 1.3, 0.05], (1, 1))
>>> def send(t, row):
...     features, alerts = engine.process(["s1"], np.array([t]), row, np.array([t]))
...     return alerts
>>> quiet = [send(float(t), values * (1 + 0.01 * np.sin(t))) for t in range(100)]
>>> fire = values.copy(); fire[0, [0, 8, 9, 4]] = [70.0, 3000.0, 9000.0, 12000.0]
>>> alerts = [a for t in range(100, 105) for a in send(float(t), fire)]
>>> [(a.kind, a.severity, a.state, a.event_time) for a in alerts]
[('fire', 'critical', 'raised', 102.0)]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from actors.detectors.base import Detector, ReadingBatch, Scores, steps
from actors.detectors.fusion import CRITICAL as CRITICAL_GROUP
from actors.detectors.fusion import FIRE_CHANNELS, FireEvidence, HysteresisFusion, fire_evidence
from actors.detectors.model_probability import ModelProbability
from actors.detectors.particle_size import ParticleSize
from actors.detectors.rate_of_rise import RateOfRise
from actors.detectors.silent import SilentSensor
from actors.detectors.stuck import StuckSignal
from actors.detectors.thresholds import ThresholdTiers
from actors.detectors.zscore import EwmaZScore
from ingest.alert_message import CLEARED, CRITICAL, FIRE, INFO, RAISED, SILENT, STUCK, WARNING, AlertEvent, alert_id
from ingest.schema import MEASUREMENTS
from ingest.settings import DetectionSettings
from train.features import FeatureHistory, features_for_slots
from train.slot_table import SlotStateOwner, SlotTable

__all__ = ["AlertEvent", "DetectionEngine", "SnapshotError"]

SENSOR_FORMAT = 1  # one sensor's state: export_sensor / import_sensor (eviction)
# The whole engine (snapshot / restore), column by column, feature history included. Formats 1
# (a per-sensor export of every sensor) and 2 (no feature history: it was kept beside the engine)
# are still read, from checkpoints written before format 3.
SNAPSHOT_FORMAT = 3
READABLE_SNAPSHOT_FORMATS = (1, 2, 3)


class SnapshotError(ValueError):
    """A snapshot or exported sensor state that does not fit this engine's settings."""


class DetectionEngine:
    """Per-sensor detectors and fusion for the sensors of one partition; see the module docstring."""

    def __init__(self, settings: DetectionSettings, model: Any | None = None, *,
                 clock: Callable[[], float] = time.time, capacity: int = 64) -> None:
        self.settings = settings
        self.clock = clock
        self.table = SlotTable(capacity, self._grow)
        self.features = FeatureHistory(capacity)
        self.thresholds = ThresholdTiers(settings.thresholds, capacity)
        self.zscore = EwmaZScore(settings.zscore, capacity)
        self.rate_of_rise = RateOfRise(settings.rate_of_rise, capacity)
        self.particle_size = ParticleSize(settings.particle_size, capacity)
        self.stuck = StuckSignal(settings.stuck, capacity)
        self.silent = SilentSensor(settings.silent, capacity)
        self.model = ModelProbability(model, capacity)
        self.detectors: tuple[Detector, ...] = (
            self.thresholds, self.particle_size, self.zscore, self.rate_of_rise, self.stuck, self.silent,
            self.model)
        # Stuck and silent need no k-of-n: their evidence is already a run of readings / of seconds.
        self.fusions: dict[str, HysteresisFusion] = {
            FIRE: HysteresisFusion.from_settings(settings.fusion, capacity),
            STUCK: HysteresisFusion(1, 1, 1, capacity),
            SILENT: HysteresisFusion(1, 1, 1, capacity),
        }

    # Model -------------------------------------------------------------------------------

    def set_model(self, model: Any | None) -> None:
        """Use ``model`` from the next batch on (a newly promoted version); None runs without one."""
        self.model.model = model

    # Processing ----------------------------------------------------------------------------

    def process(self, sensor_ids: Sequence[str], timestamps: np.ndarray, values: np.ndarray,
                arrival_times: np.ndarray) -> tuple[np.ndarray, list[AlertEvent]]:
        """The features of a batch of readings (each sensor's rows in time order) and the alerts it raised or cleared.

        Features come back in input order, shape ``(n, len(FEATURE_NAMES))`` (the lake stores them).
        """
        timestamps, values, arrival_times = _checked(sensor_ids, timestamps, values, arrival_times)
        slots = self.table.lookup(sensor_ids)
        features = features_for_slots(self.features, slots, timestamps, values)
        if not len(sensor_ids):
            return features, []
        batch = ReadingBatch(slots, timestamps, values, features, arrival_times)
        thresholds = self.thresholds.score_batch(batch)
        model = self.model.score_batch(batch)
        particle_size = self.particle_size.score_batch(batch)
        alerts: list[AlertEvent] = []
        for rows in steps(batch.slots):
            step = batch.take(rows)
            zscore = self.zscore.score_batch(step)
            rate = self.rate_of_rise.score_batch(step)
            stuck = self.stuck.score_batch(step)
            fire_scores = [thresholds.take(rows), model.take(rows), zscore, rate, particle_size.take(rows)]
            self._fuse_fire(step, fire_scores, alerts)
            self._fuse_stuck(step, stuck, alerts)
            self._clear_silent(step, alerts)
            self.zscore.learn_batch(step, zscore)
            self.rate_of_rise.learn_batch(step, rate)
            self.stuck.learn_batch(step, stuck)
            self.silent.learn_batch(step, self.silent.score_batch(step))
        return features, alerts

    def tick(self, now: float) -> list[AlertEvent]:
        """Raise ``sensor_silent`` for sensors with no reading for ``silent.after_s`` wall-clock seconds."""
        if not self.slots:
            return []
        known = np.fromiter(self.slots.values(), dtype=np.int64, count=len(self.slots))
        quiet = self.silent.silent(now, known)
        fusion = self.fusions[SILENT]
        quiet = quiet[~fusion.raised(quiet)]
        if not len(quiet):
            return []
        last_event = self.silent.state["last_event"][quiet]
        last_arrival = self.silent.state["last_arrival"][quiet]
        # In event time the silence began with the last reading; it became an alert after_s later.
        event_times = last_event + self.silent.after_s
        raised, _ = fusion.update(quiet, event_times, np.ones(len(quiet), dtype=bool))
        sensor_of = self._sensor_of()
        return [self._alert(int(quiet[r]), SILENT, RAISED, WARNING, float(event_times[r]),
                            float((now - last_arrival[r]) / self.silent.after_s), {
                                "last_event_time": float(last_event[r]), "last_arrival": float(last_arrival[r]),
                                "silent_for_s": float(now - last_arrival[r]), "after_s": self.silent.after_s},
                            sensor_of)
                for r in raised.tolist()]

    def _fuse_fire(self, step: ReadingBatch, scores: list[Scores], alerts: list[AlertEvent]) -> None:
        fusion = self.fusions[FIRE]
        raised_before = fusion.raised(step.slots)
        evidence = fire_evidence(scores, raised_before, self.settings.fusion)
        raised, cleared = fusion.update(step.slots, step.timestamps, evidence.anomalous, evidence.strength)
        if not (len(raised) or len(cleared)):
            return
        sensor_of = self._sensor_of()
        for r in raised.tolist():
            slot = int(step.slots[r])
            severity = CRITICAL if evidence.critical[r] or evidence.channels[r] >= 3 else WARNING
            alerts.append(self._alert(slot, FIRE, RAISED, severity, float(step.timestamps[r]),
                                      float(evidence.strength[r]), self._fire_evidence(scores, evidence, r, slot),
                                      sensor_of))
        for r in cleared.tolist():
            alerts.append(self._cleared(int(step.slots[r]), FIRE, float(step.timestamps[r]), sensor_of))

    def _fire_evidence(self, scores: list[Scores], evidence: FireEvidence, row: int, slot: int) -> dict[str, Any]:
        fired: dict[str, dict[str, Any]] = {}
        channels: set[str] = set()
        for detector, s in zip(("thresholds", "model", "zscore", "rate_of_rise", "particle_size"), scores,
                               strict=True):
            for j, name in enumerate(s.names):
                if s.ratio[row, j] >= 1.0:
                    fired.setdefault(detector, {})[name] = {
                        "observed": float(s.observed[row, j]), "threshold": float(s.threshold[j])}
                    channels.add(s.groups[j])
        fusion = self.fusions[FIRE]
        return {
            "detectors": fired,
            "channels": sorted(channels & {*FIRE_CHANNELS, CRITICAL_GROUP}),
            "particles_vetoed": bool(evidence.vetoed[row]),
            "rule": f"{fusion.k} of {fusion.n} readings anomalous",
            "anomalous_readings": int(np.bitwise_count(fusion.state["bits"][slot])),
            "incident_start": float(fusion.state["incident_start"][slot]),
        }

    def _fuse_stuck(self, step: ReadingBatch, stuck: Scores, alerts: list[AlertEvent]) -> None:
        ratio = np.nan_to_num(stuck.ratio, nan=0.0)
        anomalous = (ratio >= 1.0).any(axis=1)
        strength = ratio.max(axis=1, initial=0.0)
        raised, cleared = self.fusions[STUCK].update(step.slots, step.timestamps, anomalous, strength)
        if not (len(raised) or len(cleared)):
            return
        sensor_of = self._sensor_of()
        for r in raised.tolist():
            signals = {name: {"identical_readings": int(stuck.observed[r, j]),
                              "value": float(step.values[r, MEASUREMENTS.index(name)])}
                       for j, name in enumerate(stuck.names) if ratio[r, j] >= 1.0}
            alerts.append(self._alert(int(step.slots[r]), STUCK, RAISED, WARNING, float(step.timestamps[r]),
                                      float(strength[r]), {"signals": signals,
                                                           "window_readings": int(stuck.threshold[0])},
                                      sensor_of))
        for r in cleared.tolist():
            alerts.append(self._cleared(int(step.slots[r]), STUCK, float(step.timestamps[r]), sensor_of))

    def _clear_silent(self, step: ReadingBatch, alerts: list[AlertEvent]) -> None:
        fusion = self.fusions[SILENT]
        talking = step.slots[fusion.raised(step.slots)]
        if not len(talking):
            return
        rows = np.flatnonzero(fusion.raised(step.slots))
        _, cleared = fusion.update(talking, step.timestamps[rows], np.zeros(len(rows), dtype=bool))
        sensor_of = self._sensor_of()
        for c in cleared.tolist():
            alerts.append(self._cleared(int(talking[c]), SILENT, float(step.timestamps[rows[c]]), sensor_of))

    def _alert(self, slot: int, kind: str, state: str, severity: str, event_time: float, score: float,
               evidence: dict[str, Any], sensor_of: list[str | None]) -> AlertEvent:
        sensor_id = sensor_of[slot]
        assert sensor_id is not None
        start = float(self.fusions[kind].state["incident_start"][slot])
        return AlertEvent(alert_id(sensor_id, kind, start), sensor_id, kind, severity, state, event_time,
                          float(self.clock()), score, self.model.version, evidence)

    def _cleared(self, slot: int, kind: str, event_time: float, sensor_of: list[str | None]) -> AlertEvent:
        st = self.fusions[kind].state
        peak = float(st["peak"][slot])
        return self._alert(slot, kind, CLEARED, INFO, event_time, peak, {
            "incident_start": float(st["incident_start"][slot]), "raised_at": float(st["raised_at"][slot]),
            "peak_score": peak, "normal_readings": self.fusions[kind].m}, sensor_of)

    # Slots ------------------------------------------------------------------------------------

    @property
    def slots(self) -> dict[str, int]:
        return self.table.slots

    def _grow(self, capacity: int) -> None:
        for part in self._parts():
            part.resize(capacity)

    def _sensor_of(self) -> list[str | None]:
        return self.table.ids

    def _parts(self) -> list[SlotStateOwner]:
        return [self.features, *self.detectors, *self.fusions.values()]

    # State: snapshot, eviction --------------------------------------------------------------

    def export_sensor(self, sensor_id: str) -> dict[str, Any]:
        """One sensor's detector and fusion state as plain data."""
        slot = self._slot(sensor_id)
        return {
            "format": SENSOR_FORMAT,
            "features": self.features.export_slot(slot),
            "detectors": {d.name: d.export_slot(slot) for d in self.detectors},
            "fusion": {kind: f.export_slot(slot) for kind, f in self.fusions.items()},
        }

    def import_sensor(self, sensor_id: str, data: dict[str, Any]) -> None:
        """Load a sensor's state exported by :meth:`export_sensor` (replacing any it has)."""
        if data.get("format") != SENSOR_FORMAT:
            raise SnapshotError(f"sensor {sensor_id}: state format {data.get('format')!r}, "
                                f"this engine reads {SENSOR_FORMAT}")
        slot = self.table.slot(sensor_id)
        try:
            if "features" in data:  # absent from sensors evicted before the history joined the engine
                self.features.import_slot(slot, data["features"])
            for d in self.detectors:
                d.import_slot(slot, data["detectors"][d.name])
            for kind, f in self.fusions.items():
                f.import_slot(slot, data["fusion"][kind])
        except (KeyError, ValueError) as err:
            self._release(sensor_id)
            raise SnapshotError(f"sensor {sensor_id}: state does not fit the detection settings "
                                f"(were they changed since it was saved?): {err!r}") from None

    def evict(self, sensor_id: str) -> dict[str, Any]:
        """Remove a sensor's state from memory and return it (for the checkpoint store)."""
        data = self.export_sensor(sensor_id)
        self._release(sensor_id)
        return data

    def _release(self, sensor_id: str) -> None:
        slot = self.table.release(sensor_id)
        for part in self._parts():
            part.reset_slot(slot)

    def _slot(self, sensor_id: str) -> int:
        try:
            return self.slots[sensor_id]
        except KeyError:
            raise KeyError(f"sensor {sensor_id!r} has no detection state here") from None

    def idle_sensors(self, now: float, idle_s: float, *, heard_since: float = -np.inf,
                     limit: int | None = None) -> list[str]:
        """Sensors unheard for ``idle_s`` wall-clock seconds before ``now``, the longest idle first.

        A sensor counts as heard at its last arrival, or at ``heard_since`` if that is later
        (the owner restored the partition then: time without an owner is not idleness).
        At most ``limit`` of them.
        """
        if not self.slots:
            return []
        ids = list(self.slots)
        last = self.silent.state["last_arrival"][np.fromiter(self.slots.values(), dtype=np.int64, count=len(ids))]
        heard = np.fmax(np.nan_to_num(last, nan=-np.inf), heard_since)
        idle = np.flatnonzero(now - heard >= idle_s)
        idle = idle[np.argsort(heard[idle], kind="stable")][:limit]
        return [ids[i] for i in idle.tolist()]

    def snapshot(self) -> dict[str, Any]:
        """All per-sensor state as plain data, sensors in sorted order (deterministic).

        Column by column: ``detectors[name][quantity][i]`` belongs to ``sensors[i]``.
        """
        sensors = sorted(self.slots)
        slots = np.fromiter((self.slots[s] for s in sensors), dtype=np.int64, count=len(sensors))
        return {"format": SNAPSHOT_FORMAT, "sensors": sensors,
                "features": self.features.export_slots(slots),
                "detectors": {d.name: d.export_slots(slots) for d in self.detectors},
                "fusion": {kind: f.export_slots(slots) for kind, f in self.fusions.items()}}

    @classmethod
    def restore(cls, settings: DetectionSettings, snapshot: dict[str, Any], model: Any | None = None, *,
                clock: Callable[[], float] = time.time) -> DetectionEngine:
        """An engine continuing from :meth:`snapshot`: the same input then gives the same features and alerts.

        Snapshots of formats 1 and 2 carry no feature history; the caller imports it
        (:meth:`import_feature_history`) from where it was kept then.
        """
        version = snapshot.get("format")
        if version not in READABLE_SNAPSHOT_FORMATS:
            raise SnapshotError(f"snapshot format {version!r}, this engine reads {READABLE_SNAPSHOT_FORMATS}")
        sensors = snapshot["sensors"]
        capacity = 64
        while capacity < len(sensors):
            capacity *= 2
        engine = cls(settings, model, clock=clock, capacity=capacity)
        if version == SENSOR_FORMAT:  # every sensor exported on its own
            for sensor_id, data in sensors.items():
                engine.import_sensor(sensor_id, data)
            return engine
        slots = engine.table.lookup(sensors)
        try:
            if "features" in snapshot:
                engine.features.import_slots(slots, snapshot["features"])
            for d in engine.detectors:
                d.import_slots(slots, snapshot["detectors"][d.name])
            for kind, f in engine.fusions.items():
                f.import_slots(slots, snapshot["fusion"][kind])
        except (KeyError, ValueError) as err:
            raise SnapshotError(f"snapshot does not fit the detection settings (were they changed since it "
                                f"was saved?): {err!r}") from None
        return engine

    def import_feature_history(self, sensors: Sequence[str], history: dict[str, Any]) -> None:
        """Feature history of ``sensors`` as checkpoints before format 3 kept it beside the engine."""
        self.features.import_slots(self.table.lookup(sensors), history)

    def nbytes_per_sensor(self) -> float:
        """Bytes of memory per sensor: the per-slot arrays plus the slot table's entry (measured)."""
        arrays = sum(part.nbytes_per_slot() for part in self._parts())
        count = max(len(self.slots), 1)
        # The slot table: dict bytes per entry, the key string, and the int slot (small ints are shared).
        table = sys.getsizeof(self.slots) / count
        keys = sum(sys.getsizeof(k) for k in self.slots) / count if self.slots else 0.0
        return float(arrays + table + keys)

    def __len__(self) -> int:
        return len(self.slots)


def _checked(sensor_ids: Sequence[str], timestamps: np.ndarray, values: np.ndarray,
             arrival_times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(sensor_ids)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    arrival_times = np.asarray(arrival_times, dtype=np.float64)
    expected = {"timestamps": ((n,), timestamps), "values": ((n, len(MEASUREMENTS)), values),
                "arrival_times": ((n,), arrival_times)}
    for name, (shape, array) in expected.items():
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}; expected {shape} for {n} sensor ids")
    for name, array in (("timestamps", timestamps), ("values", values), ("arrival_times", arrival_times)):
        bad = ~np.isfinite(array)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ValueError(f"{name} of row {row} (sensor {sensor_ids[row]!r}) is not finite: "
                             "readings must be validated before detection")
    return timestamps, values, arrival_times
