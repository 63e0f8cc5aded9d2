"""A fleet of simulated sensors in event time, and replay of a Kaggle-format CSV.

:class:`FleetSimulator` produces readings of N sensors at a total rate, in
batches, with simulated timestamps: as fast as the CPU allows (tests push 200
sensors x 30 simulated minutes through in seconds) or paced to the wall clock
by :func:`paced` (``time_scale`` simulated seconds per wall second; 1 is real
time). Reading k of the run is taken at ``start + k / rate`` by sensor
``k mod N``, so every sensor reports every ``N / rate`` seconds.

Each sensor has its own baseline (indoor or outdoor air, see
:mod:`ingest.incidents`), slow drift (a mean-reverting random walk), noise,
dropouts (a reading that never arrives) and, for a few, a stuck measurement (a
value frozen for the whole run). Incidents (smouldering and flaming fires,
cooking/steam nuisances) start at random (a Poisson process per sensor) and
their signals rise together. Every injected incident and stuck sensor is
written to a ground-truth log (:class:`Incident`, one JSON line each) as it
starts. Everything is reproducible from the seed.

>>> from ingest.settings import SimulatorSettings
>>> sim = FleetSimulator(SimulatorSettings(sensors=3, rate=3, seed=1), start_time=1_700_000_000.0)
>>> batch = next(sim.batches(duration_s=1.0))
>>> batch.sensor_ids, batch.timestamps.tolist()
(['sim-00000', 'sim-00001', 'sim-00002'], [1700000000.0, 1700000000.333, 1700000000.667])
>>> from ingest.reading import Reading, encode_batch, encode_message
>>> Reading.from_message(batch.messages()[0]).sensor_id
'sim-00000'
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Protocol, TypeVar

import numpy as np
import orjson
import pandas as pd

from ingest.incidents import (
    LATENT,
    SIGNATURES,
    IncidentKind,
    blend_coarse,
    draw_baselines,
    effect,
    intensity,
    kind_code,
)
from ingest.reading import Reading, encode_batch, encode_message
from ingest.schema import MEASUREMENTS, SENSOR_ID, TIMESTAMP
from ingest.settings import SimulatorSettings

STUCK = "stuck_sensor"
# Readings are made in steps of this many (or N, if fewer): the unit of random draws.
STEP = 500
# Drift: a random walk per sensor, pulled back toward the baseline over hours.
_DRIFT_SIGMA_PER_SQRT_S = {"temperature_c": 0.004, "humidity_pct": 0.01, "pressure_hpa": 0.002}
_DRIFT_COLUMNS = np.array([LATENT.index(c) for c in _DRIFT_SIGMA_PER_SQRT_S])
_DRIFT_SIGMA = np.array(list(_DRIFT_SIGMA_PER_SQRT_S.values()))
_DRIFT_REVERSION_S = 6 * 3600.0
_FIRE_KINDS = (IncidentKind.SMOULDERING, IncidentKind.FLAMING)


class _Timed(Protocol):
    timestamps: np.ndarray


B = TypeVar("B", bound=_Timed)


@dataclass(frozen=True)
class Incident:
    """One line of the ground-truth log: what was injected into which sensor, and when.

    ``kind`` is an :class:`~ingest.incidents.IncidentKind` or ``stuck_sensor``;
    ``end`` is the planned end (a run may stop earlier); ``size`` is the
    incident's multiplier (median 1) and ``detail`` the stuck measurement.
    """

    sensor_id: str
    kind: str
    start: float
    end: float | None
    is_fire: bool
    size: float = 1.0
    detail: str = ""

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))


def read_incident_log(path: str | Path) -> list[Incident]:
    """The incidents of a ground-truth log written by :class:`FleetSimulator`."""
    with open(path, "rb") as lines:
        return [Incident(**orjson.loads(line)) for line in lines if line.strip()]


def fire_labels(sensor_ids: list[str], timestamps: np.ndarray, incidents: list[Incident]) -> np.ndarray:
    """1 where a reading falls inside a fire incident of its sensor, else 0 (the ground-truth label)."""
    labels = np.zeros(len(sensor_ids), dtype=np.int64)
    by_sensor: dict[str, list[Incident]] = {}
    for incident in incidents:
        if incident.is_fire:
            by_sensor.setdefault(incident.sensor_id, []).append(incident)
    if not by_sensor:
        return labels
    ids = np.asarray(sensor_ids, dtype=object)
    for sensor, fires in by_sensor.items():
        rows = np.flatnonzero(ids == sensor)
        for fire in fires:
            end = math.inf if fire.end is None else fire.end
            inside = (timestamps[rows] >= fire.start) & (timestamps[rows] <= end)
            labels[rows[inside]] = 1
    return labels


@dataclass
class SimBatch:
    """Readings in columns: ``values[k]`` is the reading of ``sensor_ids[k]`` at ``timestamps[k]``."""

    sensor_ids: list[str]
    timestamps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.sensor_ids)

    def slice(self, start: int, stop: int) -> SimBatch:
        return SimBatch(self.sensor_ids[start:stop], self.timestamps[start:stop], self.values[start:stop])

    @staticmethod
    def concat(batches: list[SimBatch]) -> SimBatch:
        if len(batches) == 1:
            return batches[0]
        return SimBatch([s for b in batches for s in b.sensor_ids],
                        np.concatenate([b.timestamps for b in batches]) if batches else np.zeros(0),
                        np.vstack([b.values for b in batches]) if batches else np.zeros((0, len(MEASUREMENTS))))

    def keys(self) -> list[bytes]:
        return [s.encode() for s in self.sensor_ids]

    def readings(self) -> Iterator[Reading]:
        for sensor, stamp, row in zip(self.sensor_ids, self.timestamps.tolist(), self.values.tolist(),
                                      strict=True):
            yield Reading(sensor, stamp, dict(zip(MEASUREMENTS, row, strict=True)))

    def wire_messages(self) -> list[bytes]:
        """The same bytes as :meth:`messages`, made faster (see :func:`ingest.reading.encode_batch`)."""
        return encode_batch(self.sensor_ids, self.timestamps.tolist(), self.values.tolist())

    def messages(self) -> list[bytes]:
        """The readings in their wire form (:func:`ingest.reading.encode_message`)."""
        return [encode_message(sensor, stamp, dict(zip(MEASUREMENTS, row, strict=True)))
                for sensor, stamp, row in zip(self.sensor_ids, self.timestamps.tolist(), self.values.tolist(),
                                              strict=True)]


class FleetSimulator:
    """N simulated sensors; iterate :meth:`batches` for readings in event-time order."""

    def __init__(self, config: SimulatorSettings, *, start_time: float | None = None,
                 incident_log: IO[bytes] | None = None) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        n = config.sensors
        self.sensor_ids = [f"{config.sensor_prefix}-{i:05d}" for i in range(n)]
        self.start_time = time.time() if start_time is None else float(start_time)
        places = np.where(self.rng.random(n) < config.outdoor_share, "outdoor", "indoor").tolist()
        self.baselines = draw_baselines(self.rng, places)
        self.drift = np.zeros((n, len(_DRIFT_COLUMNS)))
        self.period_s = n / config.rate
        self.sequence = 0  # index of the next reading of the run
        self.incidents: list[Incident] = []
        self.dropped = 0
        self._log = incident_log
        # One incident at a time per sensor: its kind code (-1: none), start, end and size.
        self._code = np.full(n, -1)
        self._start = np.zeros(n)
        self._end = np.zeros(n)
        self._size = np.ones(n)
        self._next = self.start_time + self._waits(n)
        stuck = np.flatnonzero(self.rng.random(n) < config.stuck_sensor_share)
        self._stuck_column = np.full(n, -1)
        self._stuck_column[stuck] = self.rng.integers(0, len(MEASUREMENTS), len(stuck))
        self._stuck_value = np.full(n, np.nan)
        for i in stuck:
            self._record(Incident(self.sensor_ids[i], STUCK, self.start_time, None, False,
                                  detail=MEASUREMENTS[self._stuck_column[i]]))

    @property
    def now(self) -> float:
        """Simulated time of the next reading."""
        return self.start_time + self.sequence / self.config.rate

    def batches(self, batch_size: int = 1_000, duration_s: float | None = None) -> Iterator[SimBatch]:
        """Readings in event-time order, as fast as they can be made, until ``duration_s`` simulated seconds.

        Readings are made in fixed steps of ``min(N, STEP)``, whatever ``batch_size``,
        so a seed gives the same readings for any batch size; batches hold at most
        ``min(batch_size, N)`` readings, so no sensor appears twice in one. Without a
        duration this never ends.
        """
        size = max(1, min(batch_size, self.config.sensors))
        step = min(self.config.sensors, STEP)
        total = math.inf if duration_s is None else math.ceil(duration_s * self.config.rate)
        while self.sequence < total:
            if size < step:
                chunk = self._next_batch(int(min(step, total - self.sequence)))
                for first in range(0, len(chunk), size):
                    yield chunk.slice(first, first + size)
                continue
            chunks = []
            for _ in range(size // step):
                if self.sequence >= total:
                    break
                chunks.append(self._next_batch(int(min(step, total - self.sequence))))
            batch = SimBatch.concat(chunks)
            if len(batch):
                yield batch

    def _next_batch(self, count: int) -> SimBatch:
        seq = np.arange(self.sequence, self.sequence + count)
        self.sequence += count
        idx = seq % self.config.sensors
        t = np.round(self.start_time + seq / self.config.rate, 3)
        self._advance_drift(idx)
        self._update_incidents(idx, t)
        latent = self.baselines.latent(idx)
        latent[:, _DRIFT_COLUMNS] += self.drift[idx]
        active = self._code[idx] >= 0
        if active.any():
            rows, sensors = np.flatnonzero(active), idx[active]
            codes = self._code[sensors]
            level = intensity(codes, t[rows] - self._start[sensors], self._end[sensors] - self._start[sensors])
            level *= self.rng.lognormal(0.0, 0.25, len(rows))  # turbulence: smoke arrives in puffs
            size = self._size[sensors]
            part = latent[rows]
            part += effect(codes, level, size)
            blend_coarse(part, codes, level, size)
            latent[rows] = part
        values = self.baselines.measure(self.rng, idx, latent)
        self._apply_stuck(idx, values)
        keep = self.rng.random(count) >= self.config.dropout_probability
        self.dropped += int(count - keep.sum())
        ids = self.sensor_ids
        return SimBatch([ids[i] for i in idx[keep].tolist()], t[keep], values[keep])

    def _waits(self, count: int) -> np.ndarray:
        rate = self.config.incidents_per_sensor_hour / 3600.0
        return self.rng.exponential(1.0 / rate, count) if rate > 0 else np.full(count, np.inf)

    def _advance_drift(self, idx: np.ndarray) -> None:
        dt = self.period_s
        pull = math.exp(-dt / _DRIFT_REVERSION_S)
        self.drift[idx] = self.drift[idx] * pull + self.rng.normal(0.0, 1.0, (len(idx), len(_DRIFT_SIGMA))) \
            * _DRIFT_SIGMA * math.sqrt(dt)

    def _update_incidents(self, idx: np.ndarray, t: np.ndarray) -> None:
        ended = (self._code[idx] >= 0) & (t > self._end[idx])
        if ended.any():
            sensors = idx[ended]
            self._code[sensors] = -1
            self._next[sensors] = self._end[sensors] + self._waits(len(sensors))
        starting = (self._code[idx] < 0) & (t >= self._next[idx])
        for sensor in idx[starting].tolist():
            self._start_incident(sensor)

    def _start_incident(self, sensor: int) -> None:
        config = self.config
        if self.rng.random() < config.nuisance_share:
            kind = IncidentKind.NUISANCE
        else:
            kind = _FIRE_KINDS[int(self.rng.integers(0, len(_FIRE_KINDS)))]
        signature = SIGNATURES[kind]
        start = float(self._next[sensor])
        duration = float(self.rng.uniform(*signature.duration_s))
        # Sizes below half the median would be invisible fires; the log records the size drawn.
        size = float(max(0.5, self.rng.lognormal(0.0, signature.spread / 2)))
        self._code[sensor] = kind_code(kind)
        self._start[sensor], self._end[sensor], self._size[sensor] = start, start + duration, size
        self._record(Incident(self.sensor_ids[sensor], str(kind), round(start, 3), round(start + duration, 3),
                              signature.is_fire, round(size, 3)))

    def _apply_stuck(self, idx: np.ndarray, values: np.ndarray) -> None:
        columns = self._stuck_column[idx]
        rows = np.flatnonzero(columns >= 0)
        if not len(rows):
            return
        sensors = idx[rows]
        fresh = np.isnan(self._stuck_value[sensors])
        self._stuck_value[sensors[fresh]] = values[rows[fresh], columns[rows[fresh]]]
        values[rows, columns[rows]] = self._stuck_value[sensors]

    def _record(self, incident: Incident) -> None:
        self.incidents.append(incident)
        if self._log is not None:
            self._log.write(incident.to_json() + b"\n")
            self._log.flush()


def paced(batches: Iterator[B], time_scale: float | None, *,
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
          ) -> Iterator[B]:
    """Hold each batch back until the wall clock reaches its first event time (over ``time_scale``).

    ``time_scale`` is simulated seconds per wall second (1 is real time, 10 ten
    times faster); ``None`` passes batches through as fast as they come.
    """
    if time_scale is None:
        yield from batches
        return
    origin_event: float | None = None
    origin_wall = clock()
    for batch in batches:
        if origin_event is None:
            origin_event = float(batch.timestamps[0])
        due = origin_wall + (float(batch.timestamps[0]) - origin_event) / time_scale
        wait = due - clock()
        if wait > 0:
            sleep(wait)
        yield batch


def write_simulation(config: SimulatorSettings, out_dir: str | Path, duration_s: float,
                     start_time: float | None = None) -> tuple[Path, Path]:
    """Run the simulator as fast as possible into files: ``readings.jsonl`` and ``incidents.jsonl``.

    The readings file holds one wire message per line (exactly what goes to
    Kafka); :mod:`ingest.loader` loads it into the lake with labels from the
    incident log.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    readings_path, incidents_path = out / "readings.jsonl", out / "incidents.jsonl"
    with open(incidents_path, "wb") as log, open(readings_path, "wb") as sink:
        sim = FleetSimulator(config, start_time=start_time, incident_log=log)
        for batch in sim.batches(duration_s=duration_s):
            sink.write(b"\n".join(batch.messages()) + b"\n")
    return readings_path, incidents_path


# --- replay of a Kaggle-format CSV -------------------------------------------------------------

@dataclass
class ReplayBatch:
    """Rows of a replayed CSV: keys, wire messages, event times and their source row numbers."""

    keys: list[bytes]
    messages: list[bytes]
    timestamps: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


def replay_schedule(frame: pd.DataFrame, *, sensors: int = 1, sensor_prefix: str = "kaggle",
                    start_time: float | None = None, max_gap_s: float = 5.0) -> pd.DataFrame:
    """Assign sensor ids and event times to the rows of a Kaggle frame (from :func:`read_kaggle_csv`).

    Recording sessions (``cnt`` restarting) are dealt to ``sensors`` ids in
    turn; times keep the recorded spacing, with gaps between readings shortened
    to ``max_gap_s``, and start at ``start_time`` (default now). Rows whose
    time cell is not a number keep their place (time of the previous row) and
    go out as recorded, for the stream to reject.
    """
    out = frame.copy()
    stamps = pd.to_numeric(out[TIMESTAMP], errors="coerce").ffill().fillna(0.0).to_numpy(dtype=np.float64)
    gaps = np.diff(stamps, prepend=stamps[:1])
    gaps = np.clip(gaps, 0.0, max_gap_s)
    start = time.time() if start_time is None else float(start_time)
    out["event_time"] = np.round(start + np.cumsum(gaps), 3)
    counter = pd.to_numeric(out["cnt"], errors="coerce").to_numpy(dtype=np.float64)
    new_session = np.r_[True, ~(np.diff(counter) > 0)] if len(counter) else np.zeros(0, dtype=bool)
    session = np.cumsum(new_session) - 1
    out[SENSOR_ID] = [f"{sensor_prefix}-{s % sensors:05d}" for s in session.tolist()]
    return out


def replay_batches(plan: pd.DataFrame, batch_size: int = 500) -> Iterator[ReplayBatch]:
    """The rows of a replay plan (from :func:`replay_schedule`) as wire messages, in time order.

    Rows go out in the wire form of :func:`ingest.reading.encode_message`; a row
    with an empty or non-numeric cell goes out as recorded (null or text), so the stream rejects
    it to the dead-letter topic with its reason instead of it vanishing here.
    The label is not sent: sensors do not know it.
    """
    columns = [SENSOR_ID, "event_time", TIMESTAMP, *MEASUREMENTS]
    for first in range(0, len(plan), batch_size):
        part = plan.iloc[first:first + batch_size]
        keys, messages = [], []
        for row in part[columns].itertuples(index=False, name=None):
            sensor, stamp, recorded, *values = row
            time_cell = stamp if isinstance(recorded, float) else recorded
            messages.append(encode_message(sensor, time_cell, dict(zip(MEASUREMENTS, values, strict=True))))
            keys.append(sensor.encode())
        yield ReplayBatch(keys, messages, part["event_time"].to_numpy(), np.arange(first, first + len(part)))


__all__ = [
    "STUCK", "FleetSimulator", "Incident", "ReplayBatch", "SimBatch", "fire_labels", "paced",
    "read_incident_log", "replay_batches", "replay_schedule", "write_simulation",
]
